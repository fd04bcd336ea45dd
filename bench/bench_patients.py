"""Patient search measured (not a test): "patients like this one" for the held-out patients
of a pairs directory, by ICD-9 chapter overlap with their top-k patients.

    python bench/bench_patients.py --data /tmp/q200 --model models/minilm

Every product row is `Searcher.similar_patients` on a real index of the split's notes:
lexical (BM25 with each patient's notes as one document); dense (the cosine of pooled
patient vectors) on an index of one truncated vector per note, and on one of every window
(`build-index --long windows`); hybrid on the latter, by RRF and by score fusion at each
`--dense-weights` (the lexical weight stays 1). Beside them: random, and TF-IDF cosine
between patient documents (not offered), a second bag-of-words bar. Each row has a 95%
bootstrap interval of its per-patient difference from the lexical row, paired over the same
patients, which separates rankings that unpaired intervals leave tied. Needs scikit-learn
(for TF-IDF; the [openvino] extra brings it).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

LEXICAL = "BM25, patient documents (lexical)"


def top_k_overlap(sim: np.ndarray, subjects: list, chapters: dict, k: int) -> np.ndarray:
    from mimicsearch.train.compare import jaccard

    sim = sim.copy()
    np.fill_diagonal(sim, -np.inf)
    return np.array([np.mean([jaccard(chapters[s], chapters[subjects[j]])
                              for j in np.argsort(-sim[i])[:k]])
                     for i, s in enumerate(subjects)])


def tfidf_documents(docs: list[str]) -> np.ndarray:
    """TF-IDF cosine between patient documents."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(stop_words="english", sublinear_tf=True, min_df=2).fit_transform(docs)
    return (tfidf @ tfidf.T).toarray()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a `mimicsearch pairs` output directory")
    ap.add_argument("--model", required=True, help="an exported model directory")
    ap.add_argument("--split", default="test")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--dense-weights", default="1,0.5,0.25",
                    help="comma-separated dense weights of the weighted hybrid rows")
    args = ap.parse_args()

    from mimicsearch.train.compare import (
        patient_chapters,
        patient_index,
        patient_overlap,
        random_overlap,
    )
    from mimicsearch.train.pairs import load_table

    from mimicsearch.encoder import Encoder
    from mimicsearch.fusion import Fusion

    notes = load_table(args.data, "notes", args.split)
    chapters = patient_chapters(notes, load_table(args.data, "diagnoses"))
    subjects = list(chapters)
    owner = notes["subject_id"].to_numpy()
    enc = Encoder(args.model)
    texts = notes["text"].tolist()
    started = time.perf_counter()
    truncated = enc.encode(texts)
    t_truncated = time.perf_counter() - started
    started = time.perf_counter()
    windows = enc.encode_detailed(texts, long="windows")
    t_windows = time.perf_counter() - started
    docs = [" ".join(notes["text"].iloc[np.flatnonzero(owner == s)]) for s in subjects]
    tfidf = tfidf_documents(docs)

    out = {"random": random_overlap(chapters)}
    with tempfile.TemporaryDirectory(prefix="bench-patients-") as tmp:
        ix = patient_index(notes, None, Path(tmp) / "bm25")
        started = time.perf_counter()
        out[LEXICAL] = patient_overlap(ix, chapters, "lexical", k=args.k)
        t_lexical = time.perf_counter() - started
        ix = patient_index(notes, truncated, Path(tmp) / "truncated")
        out["model, dense, one vector a note"] = patient_overlap(ix, chapters, "dense",
                                                                 k=args.k)
        ix = patient_index(notes, windows.vectors, Path(tmp) / "windows", windows.parents,
                           windows.windows)
        out["model, dense, every window"] = patient_overlap(ix, chapters, "dense", k=args.k)
        out["model, hybrid (RRF), every window"] = patient_overlap(ix, chapters, "hybrid",
                                                                   k=args.k)
        for w in (float(w) for w in args.dense_weights.split(",")):
            out[f"model, hybrid (weighted, dense {w:g} : lexical 1), every window"] = \
                patient_overlap(ix, chapters, "hybrid", Fusion("weighted", dense_weight=w),
                                k=args.k)
    out["TF-IDF cosine, patient documents (not offered)"] = top_k_overlap(
        tfidf, subjects, chapters, args.k)

    print(f"{Path(args.model).name} ({enc.variant.name}, {enc.max_length} tokens) on "
          f"{args.data} {args.split}: {len(subjects)} patients, {len(notes)} notes "
          f"({len(windows.vectors)} windows); encoding {t_truncated:.0f} s truncated, "
          f"{t_windows:.0f} s every window; lexical patient queries {t_lexical:.1f} s in "
          f"all; ICD-9 chapter overlap@{args.k}")
    print("| ranking | overlap | vs lexical, paired 95% interval |\n|---|---|---|")
    base = out[LEXICAL]
    rng = np.random.default_rng(0)
    for name, v in out.items():
        d = v - base
        draws = rng.choice(d, size=(2000, len(d))).mean(axis=1)
        lo, hi = np.percentile(draws, [2.5, 97.5])
        print(f"| {name} | {v.mean():.4f} | {d.mean():+.4f} [{lo:+.4f}, {hi:+.4f}] |")


if __name__ == "__main__":
    main()
