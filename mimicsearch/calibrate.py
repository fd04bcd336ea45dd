"""An index chooses its own search setting, on its own notes.

No one retriever or fusion suits every corpus: a model fine-tuned on one corpus can lose to
BM25 on notes written differently, and equal-weight RRF loses to the better retriever
wherever one is much stronger (BENCHMARKS, "Retrieval"). Yet an index holds its own labels:
each patient's consecutive notes (by CHARTDATE, then CHARTTIME, then index order) are
next-note pairs, the task the models are trained and evaluated on. So the index measures
every setting of `grid()` on a sample of them, with what `query --note-id` does (the
anchor's stored vector and whole text as the query, the whole index as candidates, the
anchor and other copies of its text left out, as `evaluate` leaves them out), and mode
"auto" uses the choice.

The rule: the score of a pair is the mean of its hit@5 and hit@10; the best setting has
the highest mean; the chosen one is the simplest setting within one standard error of the
best (Breiman's one-standard-error rule), the error being that of the paired difference
from the best, by a bootstrap over patients (pairs of one patient are not independent).
Simplest: one retriever alone, then equal-weight RRF k=60, then the rest; among equals the
higher mean, then grid order. A fusion is chosen only where it beats the better retriever
by more than noise.

Patient search is chosen the same way where the index was given diagnoses
(`build-index --diagnoses`): each sampled patient queries with its whole history, scored by
the diagnosis chapter overlap (Jaccard; ICD-9 and ICD-10 in one scheme) of its 10 most
similar patients, with PATIENT_DEFAULT (lexical) counted simplest: patients are fewer than
pairs and their measure noisier, so another setting must beat lexical by more than noise.
Without diagnoses, patient search uses PATIENT_DEFAULT.

Deterministic for a given index state and seed; what it costs is dominated by one dense and
one lexical search per pair (BENCHMARKS, "Calibration").
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .embeddings import TEXT_HASH
from .fileio import writer
from .fusion import Fusion, fuse
from .index.commit import commit
from .index.lexical import analyze
from .index.manifest import Calibration, IndexManifest
from .schema import pairable, timeline

SAMPLE_PATIENTS = 300  # patients with >= 2 notes drawn
SAMPLE_PAIRS = 1000  # next-note pairs measured, drawn from those patients' pairs
MIN_PAIRS = 20  # fewer: the measure is noise, keep the default
DEPTH = 100  # candidates each retriever gives a fusion (Fusion's default)
TOP_K = 10  # what a hit is measured within (R@5 and R@10 both count)
PATIENT_K = 10
BOOTSTRAP = 1000
# Notes added or removed since the last calibration, as a share of the notes it measured,
# past which `sync` and `add` calibrate again.
RECALIBRATE_SHARE = 0.2
RULE = ("simplest setting within one bootstrap standard error (over patients) of the best "
        "mean of hit@5 and hit@10; simplest: one retriever, then rrf k=60 1/1, then the rest")
PATIENT_RULE = ("the same, by chapter overlap@10 of each patient's 10 most similar, with "
                "lexical simplest of all")
ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # the dense share of a convex sum


@dataclass(frozen=True)
class Setting:
    """A mode and, for hybrid, its fusion."""

    mode: str
    fusion: Fusion | None = None

    @property
    def label(self) -> str:
        return self.mode if self.fusion is None else f"hybrid {self.fusion.label}"

    @property
    def complexity(self) -> int:
        if self.fusion is None:
            return 0
        return 1 if self.fusion == Fusion() else 2

    def to_dict(self) -> dict:
        return {"mode": self.mode, "fusion": None if self.fusion is None else
                self.fusion.to_dict(), "label": self.label}

    @classmethod
    def from_dict(cls, d: dict) -> Setting:
        return cls(d["mode"], Fusion(**d["fusion"]) if d.get("fusion") else None)


# Where nothing was measured: equal-weight RRF, the fusion that needs no calibration.
DEFAULT = Setting("hybrid", Fusion())
# Patient search without diagnoses to calibrate on: BM25 over whole histories, which no
# model setting beat on every corpus measured (BENCHMARKS, "Calibration").
PATIENT_DEFAULT = Setting("lexical")


def grid(alphas=ALPHAS) -> list[Setting]:
    """Every setting calibration measures: each retriever alone; RRF over k and the
    lexical weight; convex sums of min-max and of z-scored scores over the dense share."""
    return ([Setting("dense"), Setting("lexical")]
            + [Setting("hybrid", Fusion("rrf", k=k, lexical_weight=w))
               for k in (10, 60) for w in (0.25, 0.5, 1.0, 2.0, 4.0)]
            + [Setting("hybrid", Fusion(method, dense_weight=a, lexical_weight=round(1 - a, 2)))
               for method in ("weighted", "zscore") for a in alphas])


def patient_grid() -> list[Setting]:
    """A smaller grid for patient search (patients are fewer than pairs): RRF at k=60 with
    three lexical weights, and three dense shares of each convex sum."""
    return [s for s in grid(alphas=(0.25, 0.5, 0.75))
            if s.fusion is None or s.fusion.method != "rrf"
            or (s.fusion.k == 60 and s.fusion.lexical_weight in (0.5, 1.0, 2.0))]


# ---------------------------------------------------------------------------------------
# The rule


def choose(scores: np.ndarray, groups: np.ndarray, settings: list[Setting], seed: int = 0,
           default: Setting | None = None) -> tuple[int, list[dict]]:
    """The chosen setting (its position) and one row per setting: `scores` [units,
    settings] (a pair's mean hit, a patient's overlap), `groups` each unit's patient.
    `default`, where given, counts as simpler than every other setting: it stands unless
    another beats it by more than noise."""
    _, g = np.unique(groups, return_inverse=True)
    sums = np.zeros((g.max() + 1, len(settings)))
    np.add.at(sums, g, scores)
    counts = np.bincount(g).astype(np.float64)
    draws = np.random.default_rng(seed).multinomial(len(counts), np.full(len(counts),
                                                                         1 / len(counts)),
                                                    size=BOOTSTRAP).astype(np.float64)
    boot = (draws @ sums) / (draws @ counts)[:, None]  # [draws, settings]
    mean = scores.mean(axis=0)

    def simple(i: int) -> int:
        return -1 if settings[i] == default else settings[i].complexity
    order = sorted(range(len(settings)), key=lambda i: (-mean[i], simple(i), i))
    best = order[0]
    se = (boot - boot[:, [best]]).std(axis=0)
    eligible = [i for i in range(len(settings)) if mean[best] - mean[i] <= se[i] + 1e-12]
    chosen = min(eligible, key=lambda i: (simple(i), -mean[i], i))
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    rows = [{**s.to_dict(), "score": round(float(mean[i]), 4),
             "ci95": [round(float(lo[i]), 4), round(float(hi[i]), 4)],
             "se_vs_best": round(float(se[i]), 4), "best": i == best, "chosen": i == chosen}
            for i, s in enumerate(settings)]
    return chosen, rows


def hits_table(ranks: np.ndarray, ks=(5, 10)) -> tuple[np.ndarray, dict]:
    """Per unit the mean of hit@k over `ks` ([units, settings] of 1-based ranks, 0: not
    found), and per setting its recall@k."""
    found = ranks > 0
    hit = {k: found & (ranks <= k) for k in ks}
    return np.mean([hit[k] for k in ks], axis=0), {
        k: hit[k].mean(axis=0) for k in ks}


# ---------------------------------------------------------------------------------------
# Next-note pairs of an index


def next_note_pairs(store, seed: int = 0, patients: int = SAMPLE_PATIENTS,
                    pairs: int = SAMPLE_PAIRS) -> tuple[list, list, list]:
    """(anchor ids, next-note ids, patients) of up to `pairs` consecutive-note pairs of up
    to `patients` patients with two notes or more, drawn with `seed`. A patient's notes
    are ordered by `schema.timeline`; notes marked in error and addenda take no part."""
    schema = store.schema
    cols = [c for c in (schema.time, schema.exact_time, schema.sequence, schema.error,
                        schema.category) if c and c in store.table.column_names]
    t = store.notes_table(list(dict.fromkeys(["id", "row", schema.subject, *cols])))
    t = timeline(pairable(t, schema), schema)
    subject = pc.dictionary_encode(t.column(schema.subject).combine_chunks())
    codes = subject.indices.to_numpy(zero_copy_only=False)
    same = codes[1:] == codes[:-1]
    first = np.flatnonzero(same)  # anchor positions: the next row is the same patient's
    if not len(first):
        return [], [], []
    rng = np.random.default_rng(seed)
    owners = np.unique(codes[first])
    take = np.sort(rng.choice(owners, min(patients, len(owners)), replace=False))
    first = first[np.isin(codes[first], take)]
    if len(first) > pairs:
        first = np.sort(rng.choice(first, pairs, replace=False))
    ids = t.column("id").to_pylist()
    names = subject.dictionary.to_pylist()
    return ([ids[i] for i in first], [ids[i + 1] for i in first],
            [names[codes[i]] for i in first])


def _copies(store) -> dict:
    """Text hash -> the ids of the live notes holding that text, for texts held more than
    once."""
    t = store.notes_table(["id", TEXT_HASH]).filter(pc.is_valid(pc.field(TEXT_HASH)))
    counts = pc.value_counts(t.column(TEXT_HASH))
    dup = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    if not len(dup):
        return {}
    t = t.filter(pc.is_in(t.column(TEXT_HASH), dup))
    out: dict = {}
    for h, i in zip(t.column(TEXT_HASH).to_pylist(), t.column("id").to_pylist()):
        out.setdefault(h, []).append(i)
    return out


def _cached(fn):
    """A retriever's exact scorer remembering what it scored (calibration asks again for
    the same notes under each fusion)."""
    seen: dict = {}

    def exact(keys):
        new = [k for k in keys if k not in seen]
        if new:
            seen.update(zip(new, fn(new)))
        return [seen[k] for k in keys]
    return exact


def measure_notes(searcher, settings: list[Setting], seed: int = 0, progress: bool = False,
                  pairs: int = SAMPLE_PAIRS) -> tuple[np.ndarray, list, int]:
    """Each setting's 1-based rank of each sampled pair's next note in its top 10 (0: not
    there), [pairs, settings]; the pairs' patients; the patients sampled."""
    index = searcher._fresh()
    store = index.store
    anchors, targets, groups = next_note_pairs(store, seed, pairs=pairs)
    copies = _copies(store)
    hashes = store.table.column(TEXT_HASH) if TEXT_HASH in store.table.column_names else None
    base = store.mask(None)
    ranks = np.zeros((len(anchors), len(settings)), np.int64)
    bar = _bar(progress, len(anchors))
    for p, (anchor, target) in enumerate(zip(anchors, targets)):
        rows, _ = store.rows_of([anchor])
        allowed = base.copy()
        allowed[rows] = False
        h = None if hashes is None else hashes[int(rows[0])].as_py()
        others = [i for i in copies.get(h, []) if i not in (anchor, target)]
        if others:  # every window of them; a copy that is the next note still counts
            allowed[store.rows_of(others)[0]] = False
        vec = searcher.pool_query(rows)
        terms = analyze(store.texts.get([int(rows[0])]))
        dense = searcher._hits(vec[None], DEPTH, allowed)[0]
        lexical = searcher._lexical_hits(terms, DEPTH, allowed)[0]
        exact = {name: _cached(fn) for name, fn in searcher._exact(vec, terms[0]).items()}
        for j, s in enumerate(settings):
            if s.mode == "dense":
                hits = dense[:TOP_K]
            elif s.mode == "lexical":
                hits = lexical[:TOP_K]
            else:
                hits = searcher._fused(dense, lexical, exact, s.fusion, TOP_K)
            ranks[p, j] = next((h.rank for h in hits if h.id == target), 0)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return ranks, groups, len(set(groups))


# ---------------------------------------------------------------------------------------
# Patient search


def patient_chapters(index_dir: Path, m: IndexManifest) -> dict:
    """str(patient) -> the diagnosis chapters (ICD-9 and ICD-10 in one scheme) of all its
    admissions in the index's diagnoses."""
    import pyarrow.parquet as pq

    t = pq.read_table(m.diagnoses.verify(index_dir))
    out: dict = {}
    for s, chapters in zip(t.column("SUBJECT_ID").to_pylist(),
                           t.column("CHAPTERS").to_pylist()):
        out.setdefault(str(s), set()).update(chapters)
    return out


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def measure_patients(searcher, chapters: dict, settings: list[Setting], seed: int = 0,
                     patients: int = SAMPLE_PATIENTS) -> tuple[np.ndarray, list]:
    """Each setting's chapter overlap@10 per sampled patient (a patient's whole history
    the query), [patients, settings]; the patients."""
    from .patients import documents

    index = searcher._fresh()
    known = [s for s in searcher._patients(index, None, documents).subjects
             if str(s) in chapters]
    rng = np.random.default_rng(seed)
    sample = [known[i] for i in np.sort(rng.choice(len(known), min(patients, len(known)),
                                                   replace=False))]
    out = np.zeros((len(sample), len(settings)))
    for p, subject in enumerate(sample):
        query = searcher._patient_query(None, subject)
        ranked = {"dense": searcher._pooled_patients(None, query, None),
                  "lexical": searcher._document_patients(None, query, None)}
        mine = chapters[str(subject)]
        for j, s in enumerate(settings):
            if s.mode != "hybrid":
                r = ranked[s.mode]
                top = [r.subjects[i] for i in r.top(PATIENT_K)]
            else:
                top = [f.key for f in searcher._fuse_patients(ranked, s.fusion, PATIENT_K)]
            out[p, j] = np.mean([_jaccard(mine, chapters.get(str(t), set())) for t in top]
                                ) if top else 0.0
    return out, sample


# ---------------------------------------------------------------------------------------
# Calibrating an index


def measure(index_dir: str | Path, seed: int = 0, progress: bool = False,
            pairs: int = SAMPLE_PAIRS) -> Calibration:
    """Calibrate the index as it is now (reads only): the record `calibrate_index`
    stores."""
    from .search import Searcher

    started = time.perf_counter()
    searcher = Searcher(index_dir, watch=False, verify=False)
    index = searcher.index
    m = index.manifest
    live = len(index.store.ids())
    kept = dict(pairs=0, patients=0, seed=seed, rule=RULE, live_notes=live)
    if index.lexical is None:
        return Calibration(Setting("dense").to_dict(), None, (), seconds=0.0,
                           reason="no lexical part: dense is the only mode", **kept)
    if index.store.schema.subject is None:
        return Calibration(DEFAULT.to_dict(), DEFAULT.fusion.to_dict(), (), seconds=0.0,
                           reason="no patient column (role subject: SUBJECT_ID, subject_id, "
                           "person_id or --columns subject=COLUMN): no next-note pairs to "
                           "measure", **kept)
    settings = grid()
    ranks, groups, n_patients = measure_notes(searcher, settings, seed, progress, pairs)
    patient_search = None
    if m.diagnoses is not None:
        patient_search = _patient_record(searcher, patient_chapters(Path(index_dir), m), seed)
    seconds = round(time.perf_counter() - started, 2)
    kept |= dict(pairs=len(ranks), patients=n_patients, seconds=seconds,
                 patient_search=patient_search)
    if len(ranks) < MIN_PAIRS:
        return Calibration(DEFAULT.to_dict(), DEFAULT.fusion.to_dict(), (),
                           reason=f"{len(ranks)} next-note pairs (fewer than {MIN_PAIRS}): "
                           "too few to measure", **kept)
    scores, recall = hits_table(ranks)
    chosen, rows = choose(scores, np.array(groups, dtype=object).astype(str), settings, seed)
    for i, row in enumerate(rows):
        row["recall@5"] = round(float(recall[5][i]), 4)
        row["recall@10"] = round(float(recall[10][i]), 4)
    fusions = [i for i, s in enumerate(settings) if s.fusion is not None]
    best_fusion = max(fusions, key=lambda i: (rows[i]["score"], -settings[i].complexity, -i))
    return Calibration(settings[chosen].to_dict(), settings[best_fusion].fusion.to_dict(),
                       tuple(rows), **kept)


def _patient_record(searcher, chapters: dict, seed: int) -> dict:
    settings = patient_grid()
    overlap, sample = measure_patients(searcher, chapters, settings, seed)
    if len(sample) < MIN_PAIRS:
        return {"chosen": PATIENT_DEFAULT.to_dict(), "patients": len(sample), "table": [],
                "reason": f"{len(sample)} patients with diagnoses (fewer than {MIN_PAIRS})"}
    chosen, rows = choose(overlap, np.array([str(s) for s in sample]), settings, seed,
                          default=PATIENT_DEFAULT)
    return {"chosen": settings[chosen].to_dict(), "patients": len(sample),
            "measure": f"diagnosis chapter overlap@{PATIENT_K}", "rule": PATIENT_RULE,
            "table": rows}


def _bar(progress: bool, total: int):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(desc="calibrating", unit="pair", total=total, leave=False)


@writer("index_dir")
def calibrate_index(index_dir: str | Path, seed: int = 0, progress: bool = False,
                    pairs: int = SAMPLE_PAIRS) -> Calibration:
    """`mimicsearch calibrate`: measure on up to `pairs` pairs, then store the record in
    the manifest (one commit; nothing else changes). Its cost is one dense and one
    whole-note BM25 search per pair: fewer pairs for less time on a large index, at a
    wider interval."""
    if pairs < MIN_PAIRS:
        raise ValueError(f"pairs={pairs}: calibration needs at least {MIN_PAIRS}")
    index_dir = Path(index_dir)
    record = measure(index_dir, seed, progress, pairs)
    m = IndexManifest.load(index_dir)
    commit(index_dir, m, m.with_(calibration=record))
    return record


def stale(m: IndexManifest) -> bool:
    """Whether the notes changed enough since the last calibration to measure again."""
    c = m.calibration
    return c is not None and c.changed > RECALIBRATE_SHARE * max(c.live_notes, 1)


def refresh(index_dir: str | Path, progress: bool = False) -> Calibration | None:
    """Calibrate again if the notes changed past RECALIBRATE_SHARE (`sync`, `add`); the
    new record, or None where the old one stands."""
    m = IndexManifest.load(index_dir)
    if not stale(m):
        return None
    return calibrate_index(index_dir, m.calibration.seed, progress)
