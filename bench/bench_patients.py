"""Patient search measured (not a test): ways of ranking "patients like this one" on the
held-out patients of a pairs directory, by ICD-9 chapter overlap with their top-k patients.

    python bench/bench_patients.py --data /tmp/q200 --model models/minilm

Rows: random; BM25 and the model with note votes (what `Searcher.similar_patients` does:
every note of the patient is a query, patients collect 1/(60 + rank) per query); the
model's pooled patient vectors (mean of a patient's note vectors, cosine); Chamfer
similarity (each note's best match in the other patient, averaged both ways); and two
lexical peers over patient documents (all of a patient's notes as one text): BM25 (same
analyzer as the index) and TF-IDF cosine. Each row is given with a 95% bootstrap interval of
its per-patient difference from BM25 note votes, paired over the same patients, which is
what separates retrievers that unpaired intervals leave tied. Needs scikit-learn (for
TF-IDF; the [openvino] extra brings it).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def top_k_overlap(sim: np.ndarray, subjects: list, chapters: dict, k: int) -> np.ndarray:
    from mimicsearch.train.compare import jaccard

    sim = sim.copy()
    np.fill_diagonal(sim, -np.inf)
    return np.array([np.mean([jaccard(chapters[s], chapters[subjects[j]])
                              for j in np.argsort(-sim[i])[:k]])
                     for i, s in enumerate(subjects)])


def pooled(vectors: np.ndarray, rows: list[np.ndarray]) -> np.ndarray:
    p = np.stack([vectors[r].mean(axis=0) for r in rows])
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    return p @ p.T


def chamfer(vectors: np.ndarray, rows: list[np.ndarray]) -> np.ndarray:
    sim = vectors @ vectors.T
    c = np.stack([np.stack([sim[np.ix_(r, t)].max(axis=1).mean() for t in rows])
                  for r in rows])
    return (c + c.T) / 2


def lexical_documents(docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(BM25, TF-IDF cosine) between patient documents."""
    import bm25s
    from sklearn.feature_extraction.text import TfidfVectorizer

    from mimicsearch.index.lexical import ANALYZER, analyze

    terms = analyze(docs)
    vocab = {t: i for i, t in enumerate(sorted({t for d in terms for t in d}))}
    bm25 = bm25s.BM25(k1=ANALYZER["k1"], b=ANALYZER["b"], method=ANALYZER["method"])
    bm25.index(([[vocab[t] for t in d] for d in terms], vocab), show_progress=False)
    bm = np.stack([bm25.get_scores(sorted(set(d))) for d in terms])
    tfidf = TfidfVectorizer(stop_words="english", sublinear_tf=True, min_df=2).fit_transform(docs)
    return bm, (tfidf @ tfidf.T).toarray()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a `mimicsearch pairs` output directory")
    ap.add_argument("--model", required=True, help="an exported model directory")
    ap.add_argument("--split", default="test")
    ap.add_argument("-k", type=int, default=10)
    args = ap.parse_args()

    from mimicsearch.train.compare import (
        patient_chapters,
        patient_index,
        patient_overlap,
        random_overlap,
    )
    from mimicsearch.train.pairs import load_table

    from mimicsearch.encoder import Encoder

    notes = load_table(args.data, "notes", args.split)
    chapters = patient_chapters(notes, load_table(args.data, "diagnoses"))
    subjects = list(chapters)
    owner = notes["subject_id"].to_numpy()
    rows = [np.flatnonzero(owner == s) for s in subjects]
    enc = Encoder(args.model)
    vectors = enc.encode(notes["text"].tolist())
    docs = [" ".join(notes["text"].iloc[r]) for r in rows]
    bm25_docs, tfidf_docs = lexical_documents(docs)

    out = {"random": random_overlap(chapters)}
    with tempfile.TemporaryDirectory(prefix="bench-patients-") as tmp:
        out["BM25, note votes"] = patient_overlap(
            patient_index(notes, None, Path(tmp) / "bm25"), chapters, "lexical", k=args.k)
        out["model, note votes"] = patient_overlap(
            patient_index(notes, vectors, Path(tmp) / "dense"), chapters, "dense", k=args.k)
    out["model, pooled patient vectors"] = top_k_overlap(pooled(vectors, rows), subjects,
                                                         chapters, args.k)
    out["model, Chamfer"] = top_k_overlap(chamfer(vectors, rows), subjects, chapters, args.k)
    out["BM25, patient documents"] = top_k_overlap(bm25_docs, subjects, chapters, args.k)
    out["TF-IDF cosine, patient documents"] = top_k_overlap(tfidf_docs, subjects, chapters,
                                                            args.k)

    print(f"{Path(args.model).name} ({enc.variant.name}, {enc.max_length} tokens) on "
          f"{args.data} {args.split}: {len(subjects)} patients, {len(notes)} notes; "
          f"ICD-9 chapter overlap@{args.k}")
    print("| ranking | overlap | vs BM25 note votes, paired 95% interval |\n|---|---|---|")
    base = out["BM25, note votes"]
    rng = np.random.default_rng(0)
    for name, v in out.items():
        d = v - base
        draws = rng.choice(d, size=(2000, len(d))).mean(axis=1)
        lo, hi = np.percentile(draws, [2.5, 97.5])
        print(f"| {name} | {v.mean():.4f} | {d.mean():+.4f} [{lo:+.4f}, {hi:+.4f}] |")


if __name__ == "__main__":
    main()
