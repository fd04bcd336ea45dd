"""Retrievers side by side on held-out patients: BM25, dense models and their hybrids, on
the same next-note pairs; and patient search against random and BM25.

Every retriever is a *scorer*: query i -> a score per corpus row, with some rows dropped
(the query note itself and copies of its text, under the "excluded" protocol). A hybrid
scorer fuses two scorers' top `depth` lists with the product's own `fuse`, so what is
measured is what `query --mode hybrid` does. Fusion settings are chosen on the validation
split only and then applied, unchanged, to the split evaluated.

Patient search is measured through the product too: the split's notes go into a real index
(their vectors and whole texts), and `Searcher.similar_patients` ranks the other patients
for each held-out patient. The measure is the one the model card uses: the Jaccard overlap
of the ICD-9 chapters (over all their admissions) of a patient and each of its top-k
patients, averaged; random is its exact expectation over the other patients.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from mimicsearch import calibrate
from mimicsearch.fusion import Fusion, fuse
from mimicsearch.index.lexical import LexicalIndex, analyze, top_k

from mimicsearch.icd import chapter
from mimicsearch.schema import CUSTOM, NoteSchema
from .pairs import codes
from .protocol import KS, pair_targets, ranks, recall

Scorer = Callable[[int, Sequence[int]], np.ndarray]  # (query, dropped rows) -> scores
PATIENT_K = 10
# What `--tune-fusion` tries on the validation split.
FUSION_GRID = (
    [Fusion("rrf", k=k, lexical_weight=w) for k in (10, 60) for w in (0.25, 0.5, 1.0, 2.0)]
    + [Fusion("weighted", lexical_weight=w) for w in (0.1, 0.25, 0.5, 1.0, 2.0)])


def dense_scorer(queries: np.ndarray, corpus: np.ndarray) -> Scorer:
    def scores(i: int, drop: Sequence[int]) -> np.ndarray:
        s = (corpus @ queries[i]).astype(np.float64)
        s[list(drop)] = -np.inf
        return s
    return scores


def bm25_scorer(query_texts: Sequence[str], corpus_texts: Sequence[str]) -> Scorer:
    """BM25 exactly as an index's lexical part scores (same analysis, same library)."""
    index = LexicalIndex.over(corpus_texts)
    terms = analyze(query_texts)

    def scores(i: int, drop: Sequence[int]) -> np.ndarray:
        s = index.scores(terms[i]).astype(np.float64)
        s[s <= 0] = -np.inf  # a note sharing no word is not retrieved
        s[list(drop)] = -np.inf
        return s
    return scores


def fused_scores(d: np.ndarray, x: np.ndarray, fusion: Fusion) -> np.ndarray:
    """Fused ranks as scores of one query's dense and lexical scores: candidates outside
    both top-`depth` lists score -inf."""
    def top(s: np.ndarray) -> list[tuple[int, float]]:
        return [(int(j), float(s[j]))
                for j in top_k(s, min(fusion.depth, int(np.isfinite(s).sum())))]

    exact = {"dense": lambda keys: d[keys], "lexical": lambda keys: np.where(
        np.isfinite(x[keys]), x[keys], 0.0)}
    out = np.full(len(d), -np.inf)
    fused = fuse({"dense": top(d), "lexical": top(x)}, fusion, exact)
    # strictly decreasing pseudo-scores keep fuse's tie order in the rank count
    out[[f.key for f in fused]] = -np.arange(len(fused), dtype=np.float64)
    return out


def hybrid_scorer(dense: Scorer, lexical: Scorer, fusion: Fusion) -> Scorer:
    def scores(i: int, drop: Sequence[int]) -> np.ndarray:
        return fused_scores(dense(i, drop), lexical(i, drop), fusion)
    return scores


def scorer_recall(scorer: Scorer, targets: np.ndarray, excluded: list[list[int]],
                  ks: Sequence[int] = KS,
                  protocols: Sequence[str] = ("excluded", "seed")) -> dict[str, float]:
    """Recall@k of a scorer under each protocol, its ranks counted as `protocol.ranks`
    counts them (the embedders' `evaluate.next_note_recall` counts the same way)."""
    out = {}
    drops_of = {"excluded": excluded, "seed": [[]] * len(targets)}
    for protocol in protocols:
        ranked = np.array([ranks(scorer(i, drop)[None], np.array([target]))[0]
                           for i, (target, drop) in enumerate(zip(targets, drops_of[protocol]))],
                          dtype=np.int64)
        out |= {f"{k}_{protocol}": v for k, v in recall(ranked, ks).items()}
    return out


def choose_fusion(dense: Scorer, lexical: Scorer, targets, excluded,
                  grid: Sequence[Fusion] = FUSION_GRID) -> tuple[Fusion, list[dict]]:
    """The fusion with the best mean of recall@5 and @10 (excluded protocol) on these
    pairs (the validation split's), and what every setting tried gave."""
    tried = []
    for f in grid:
        r = scorer_recall(hybrid_scorer(dense, lexical, f), targets, excluded, ks=(5, 10),
                             protocols=("excluded",))
        tried.append({"fusion": f.to_dict(), "recall@5": r["recall@5_excluded"],
                      "recall@10": r["recall@10_excluded"]})
    best = max(range(len(grid)), key=lambda i: (tried[i]["recall@5"] + tried[i]["recall@10"],
                                                -i))
    return grid[best], tried


def setting_ranks(dense: Scorer, lexical: Scorer, settings: Sequence, targets,
                  excluded) -> np.ndarray:
    """Each query's target rank under each calibration setting ([queries, settings],
    excluded protocol), each retriever scored once a query."""
    out = np.zeros((len(targets), len(settings)), np.int64)
    for i, (target, drop) in enumerate(zip(targets, excluded)):
        d, x = dense(i, drop), lexical(i, drop)
        for j, s in enumerate(settings):
            score = d if s.mode == "dense" else x if s.mode == "lexical" else \
                fused_scores(d, x, s.fusion)
            out[i, j] = ranks(score[None], np.array([target]))[0]
    return out


FOLDS = 5


def folds_of(patients: np.ndarray) -> np.ndarray:
    """Each patient's fold (a hash of its id): the same patient always in the same one."""
    import zlib

    return np.array([zlib.crc32(str(p).encode()) % FOLDS for p in patients])


def cross_fit(values: np.ndarray, scores: np.ndarray, groups: np.ndarray, settings: list,
              seed: int = 0, default=None) -> tuple[np.ndarray, list[str]]:
    """Per unit, its `values` column under the setting the calibration rule chose on the
    other folds' units (`scores` [units, settings], `groups` each unit's patient), and each
    fold's choice. `default` is the rule's simplest setting, and a fold's choice where the
    other folds are empty (else equal-weight RRF)."""
    fold = folds_of(groups)
    got = np.empty(len(values), values.dtype)
    chosen = []
    for f in range(FOLDS):
        fit, held = fold != f, fold == f
        if not held.any():
            continue
        c = (calibrate.choose(scores[fit], groups[fit], settings, seed, default=default)[0]
             if fit.any() else settings.index(default or calibrate.DEFAULT))
        got[held] = values[held, c]
        chosen.append(settings[c].label)
    return got, chosen


def auto_recall(dense: Scorer, lexical: Scorer, targets, excluded, patients: np.ndarray,
                seed: int = 0) -> tuple[dict, dict]:
    """What mode "auto" gives on these pairs. An index calibrates on its own notes, so
    "on_all" is the rule choosing on these very pairs, as an index of these notes would;
    "auto" holds the choice out (cross-fitting): the patients in FOLDS folds, the rule
    choosing on the other folds' pairs for each fold's. Recall@k of the held-out result,
    what was chosen, and 95% intervals."""
    settings = calibrate.grid()
    r = setting_ranks(dense, lexical, settings, targets, excluded)
    scores, _ = calibrate.hits_table(np.where(r <= calibrate.TOP_K, r, 0))
    patients = np.asarray([str(p) for p in patients])
    got, chosen = cross_fit(r, scores, patients, settings, seed)
    whole, _ = calibrate.choose(scores, patients, settings, seed)
    detail = {"chosen_per_fold": chosen, "chosen_on_all": settings[whole].label,
              "rule": calibrate.RULE, "settings": len(settings), "folds": FOLDS}
    for name, ranked in (("auto", got), ("dense", r[:, 0]), ("bm25", r[:, 1]),
                         ("on_all", r[:, whole])):
        detail[name] = {f"recall@{k}": mean_ci((ranked <= k).astype(float), seed)
                        for k in (5, 10)}
    return recall(got, KS), detail


# ---------------------------------------------------------------------------------------
# Patient search


def patient_chapters(notes: pd.DataFrame, diagnoses: pd.DataFrame) -> dict:
    """subject_id -> the diagnosis chapters (ICD-9 and ICD-10 in one scheme) of all its
    admissions' codes."""
    diagnoses = codes(diagnoses)
    adm = diagnoses[diagnoses["hadm_id"].isin(set(notes["hadm_id"].dropna()))]
    chapters = adm.assign(ch=[chapter(c, v) for c, v in zip(adm["icd_code"],
                                                             adm["icd_version"])]
                          ).dropna(subset=["ch"])
    got = chapters.groupby("subject_id")["ch"].agg(set).to_dict()
    return {s: got.get(s, set()) for s in notes["subject_id"].unique()}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def random_overlap(chapters: dict) -> np.ndarray:
    """Per patient, the expected overlap with a random other patient."""
    ps = list(chapters)
    return np.array([np.mean([jaccard(chapters[p], chapters[q]) for q in ps if q != p])
                     for p in ps])


def patient_index(notes: pd.DataFrame, vectors: np.ndarray | None, out: Path,
                  parents: np.ndarray | None = None,
                  windows: np.ndarray | None = None) -> Path:
    """A real index of the split's notes (vectors and whole texts) to search patients in;
    where notes were split into windows, `parents` and `windows` give each vector row's
    note and window number (an `Encoded`'s, stored as `build-index --long windows` does).
    Without vectors (BM25 alone) the dense part holds a placeholder."""
    from mimicsearch.index import ArraySource, BuildOptions, build_index

    if vectors is None:
        vectors = np.zeros((len(notes), 8), np.float32)
        vectors[:, 0] = 1
    parents = np.arange(len(notes)) if parents is None else np.asarray(parents)
    ids = notes["row_id"]
    ids = ids.astype("int64") if pd.api.types.is_integer_dtype(ids) else ids.astype(str)
    meta = pa.table({"id": ids.to_numpy()[parents],
                     "subject": notes["subject_id"].astype(str).to_numpy()[parents],
                     "TEXT": notes["text"].to_numpy()[parents]}
                    | ({} if windows is None else {"WINDOW": windows}))
    schema = NoteSchema(CUSTOM, None, "id", subject="subject")
    build_index(ArraySource(vectors, meta, schema=schema), out, model_fingerprint="evaluation",
                options=BuildOptions(index_key="Flat", eval_queries=8), progress=False)
    return out


def patient_overlap(index_dir: Path, chapters: dict, mode: str, fusion: Fusion | None = None,
                    k: int = PATIENT_K) -> np.ndarray:
    """Per held-out patient, the mean chapter overlap with its top-k similar patients."""
    from mimicsearch.search import Searcher

    s = Searcher(index_dir, watch=False)
    out = []
    for p, mine in chapters.items():
        top = s.similar_patients(subject_id=int(p), k=k, mode=mode, fusion=fusion)
        out.append(np.mean([jaccard(mine, chapters[t.subject]) for t in top])
                   if top else 0.0)
    return np.array(out)


def mean_ci(values: np.ndarray, seed: int = 0, draws: int = 2000) -> dict:
    """Mean and a 95% bootstrap interval over the patients."""
    rng = np.random.default_rng(seed)
    boots = rng.choice(values, size=(draws, len(values)), replace=True).mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"mean": float(values.mean()), "ci95": [float(lo), float(hi)]}


def patient_search(notes: pd.DataFrame, diagnoses: pd.DataFrame,
                   vectors: dict[str, np.ndarray], fusions: dict[str, Fusion],
                   k: int = PATIENT_K) -> dict:
    """Chapter overlap@k of patient search per retriever (random, bm25, each model dense,
    hybrid and auto), with 95% intervals over the held-out patients."""
    chapters = patient_chapters(notes, diagnoses)
    out = {"k": k, "patients": len(chapters), "random": mean_ci(random_overlap(chapters))}
    with tempfile.TemporaryDirectory(prefix="mimicsearch-eval-") as tmp:
        lexical = patient_index(notes, None, Path(tmp) / "bm25")
        out["bm25"] = mean_ci(patient_overlap(lexical, chapters, "lexical", k=k))
        out["auto"] = {}
        for role, v in vectors.items():
            ix = patient_index(notes, v, Path(tmp) / role)
            out[role] = mean_ci(patient_overlap(ix, chapters, "dense", k=k))
            if role in fusions:
                out[f"hybrid({role})"] = mean_ci(patient_overlap(
                    ix, chapters, "hybrid", fusions[role], k=k))
            out[f"auto({role})"], out["auto"][role] = auto_patients(ix, chapters)
    return out


def auto_patients(index_dir: Path, chapters: dict, seed: int = 0) -> tuple[dict, dict]:
    """Patient search's "auto" on an index given these patients' diagnoses, held out from
    its own choice as `auto_recall` holds it. Its overlap with 95% interval, what was
    chosen, and the same chosen on all the patients."""
    from mimicsearch.search import Searcher

    settings = calibrate.patient_grid()
    keyed = {str(p): c for p, c in chapters.items()}
    overlap, sample = calibrate.measure_patients(Searcher(index_dir, watch=False), keyed,
                                                 settings, seed, patients=len(keyed))
    sample = np.array([str(p) for p in sample])
    got, chosen = cross_fit(overlap, overlap, sample, settings, seed,
                            default=calibrate.PATIENT_DEFAULT)
    lexical = settings.index(calibrate.Setting("lexical"))
    whole, _ = calibrate.choose(overlap, sample, settings, seed,
                                default=calibrate.PATIENT_DEFAULT)
    return mean_ci(got, seed), {
        "chosen_per_fold": chosen, "vs_lexical": mean_ci(got - overlap[:, lexical], seed),
        "chosen_on_all": settings[whole].label,
        "on_all": mean_ci(overlap[:, whole], seed),
        "on_all_vs_lexical": mean_ci(overlap[:, whole] - overlap[:, lexical], seed),
        "settings": len(settings), "folds": FOLDS}


def compare_retrievers(embeds: dict, pairs: pd.DataFrame, val_pairs: pd.DataFrame | None,
                       notes: pd.DataFrame, diagnoses: pd.DataFrame,
                       patients: bool = True) -> dict:
    """BM25, each model (`embeds`: role -> cached embedder) and each model's hybrid with
    BM25 on the same pairs, with the candidate pool; the hybrid's fusion chosen on
    `val_pairs` (equal-weight RRF where there are none), equal-weight RRF beside it."""
    corpus, targets, excluded = pair_targets(pairs)
    queries, documents = pairs["anchor_text"].tolist(), corpus["positive_text"].tolist()
    lexical = bm25_scorer(queries, documents)
    rows = {"bm25": scorer_recall(lexical, targets, excluded)}
    tuning, fusions, autos = {}, {}, {}
    tune = val_pairs is not None and len(val_pairs) > 0
    if tune:
        v_corpus, v_targets, v_excluded = pair_targets(val_pairs)
        v_queries, v_documents = val_pairs["anchor_text"].tolist(), v_corpus[
            "positive_text"].tolist()
        v_lexical = bm25_scorer(v_queries, v_documents)
    for role, embed in embeds.items():
        dense = dense_scorer(embed(queries), embed(documents))
        rows[role] = scorer_recall(dense, targets, excluded)
        rows[f"rrf({role})"] = scorer_recall(hybrid_scorer(dense, lexical, Fusion()),
                                                targets, excluded)
        got, autos[role] = auto_recall(dense, lexical, targets, excluded,
                                       pairs["subject_id"].to_numpy())
        rows[f"auto({role})"] = {f"{k}_excluded": v for k, v in got.items()}
        if tune:
            fusion, tried = choose_fusion(dense_scorer(embed(v_queries), embed(v_documents)),
                                          v_lexical, v_targets, v_excluded)
            tuning[role] = {"chosen_on": "val", "chosen": fusion.to_dict(), "tried": tried}
            rows[f"hybrid({role})"] = scorer_recall(hybrid_scorer(dense, lexical, fusion),
                                                       targets, excluded)
            fusions[role] = fusion
        else:
            fusions[role] = Fusion()
    out = {"pool": {"pairs": len(pairs), "corpus": len(corpus)}, "recall": rows,
           "fusion": tuning, "auto": autos}
    if patients:
        vectors = {role: embed(notes["text"].tolist()) for role, embed in embeds.items()}
        out["patients"] = patient_search(notes, diagnoses, vectors, fusions)
    return out
