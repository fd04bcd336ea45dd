"""Querying an index: texts, stored notes or vectors in, hit records out.

Text queries are encoded with the model the index was built with (checked by fingerprint,
since vectors of another model live in another space and would return nonsense silently).
A `Searcher` stays current: before each search it compares the index manifest's identity
(one stat) with the one it loaded and reloads on a change, so a note removed by another
process is never returned once the remover has returned.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import cohort as cohorts
from .fileio import MANIFEST
from .filters import Filters
from .calibrate import DEFAULT, PATIENT_DEFAULT, Setting
from .fusion import AUTO, MODES, Fusion, check_mode, fuse
from .index import NoteIndex, check_model, open_index
from .index.lexical import analyze
from .index.loaded import MAX_K, manifest_identity
from .patients import best_notes, documents, pool, pool_rows, profile
from .schema import role_values, timeline

__all__ = ["MODES", "Filters", "Fusion", "Hit", "Note", "PatientHit", "Results", "Searcher",
           "check_model"]


@dataclass(frozen=True)
class Hit:
    """One returned note. `metadata` holds every stored column under its source name, typed
    (ints, dates); the roles (`schema.py`) are also fields of their own, named the same for
    every layout: subject (the patient), admission, category, time (None where the index
    lacks them)."""

    query: int
    rank: int
    id: int | str
    score: float
    subject: int | str | None
    admission: int | str | None
    category: str | None
    time: object
    snippet: str | None
    row: int
    window: int | None = None
    metadata: dict = field(default_factory=dict)
    # Score provenance: retriever -> {"rank", "score"} (None where outside its candidates).
    retrievers: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Note:
    """One stored note: its metadata and, where the index keeps it, its whole text (None
    otherwise, e.g. `build-index --no-full-text`); `snippet` is its opening."""

    id: int | str
    subject: int | str | None
    admission: int | str | None
    category: str | None
    time: object
    snippet: str | None
    text: str | None
    row: int
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PatientHit:
    """One patient returned by `Searcher.similar_patients`: its score (dense: cosine of
    pooled vectors; lexical: BM25 of its notes as one document; hybrid: the fused score),
    how many of its notes were judged (those the filters let through), the best of them
    for the query (`best`, and up to three in `matches`, best first), what those notes
    span (admissions, categories by count, first and last date), and each retriever's
    rank and score of the patient."""

    rank: int
    subject: int | str
    score: float
    notes: int
    best: Hit
    retrievers: dict = field(default_factory=dict)
    matches: list = field(default_factory=list)
    admissions: list = field(default_factory=list)
    categories: list = field(default_factory=list)
    first_date: object = None
    last_date: object = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _PatientRanking:
    """One retriever's scores of every candidate patient (-inf: not a hit), and how to
    turn one into a `PatientHit` (only the returned few are described)."""

    subjects: list
    scores: np.ndarray
    store: object
    evidence: Callable[[int], tuple[np.ndarray, np.ndarray]]  # (judged rows, their scores)
    retriever: str
    _at: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def top(self, n: int) -> list[int]:
        return [int(i) for i in np.argsort(-self.scores, kind="stable")[:n]
                if np.isfinite(self.scores[i])]

    def position(self, subject) -> int | None:
        if not self._at:
            self._at.update((s, i) for i, s in enumerate(self.subjects))
        i = self._at.get(subject)
        return i if i is not None and np.isfinite(self.scores[i]) else None

    def exact(self, subjects: list) -> list[float]:
        """Scores of given candidate patients, for weighted fusion (0 for a non-hit)."""
        out = []
        for s in subjects:
            i = self.position(s)
            out.append(0.0 if i is None else float(self.scores[i]))
        return out

    def hit(self, i: int, rank: int, retrievers: dict) -> PatientHit:
        rows, row_scores = self.evidence(i)
        ids = self.store.table.column("id").take(pa.array(rows)).to_pylist()
        best = best_notes(ids, row_scores)
        records = self.store.records(rows[best])
        meta_cols = list(self.store.metadata_columns)
        matches = [_hit(0, n, row_scores[b], rows[b], rec, meta_cols, self.retriever,
                        self.store.schema)
                   for n, (b, rec) in enumerate(zip(best, records), 1)]
        return PatientHit(rank, self.subjects[i], round(float(self.scores[i]), 6),
                          best=matches[0], retrievers=retrievers, matches=matches,
                          **profile(self.store, rows))


def _hit(query: int, rank: int, score, row, record: dict, meta_cols: list,
         retriever: str, schema) -> Hit:
    """A store record as the `rank`-th hit of one retriever (its provenance)."""
    meta = {c: record[c] for c in meta_cols}
    score = round(float(score), 6)
    return Hit(query, rank, record["id"], score, *role_values(schema, meta), record["snippet"],
               int(row),
               record.get("window"), meta, {retriever: {"rank": rank, "score": score}})


def _where(filters: Filters | None, store) -> pc.Expression | None:
    """The Arrow expression of `filters` over `store` (None: no condition)."""
    filters = filters or Filters()
    if not isinstance(filters, Filters):
        raise TypeError(f"filters must be a Filters, got {type(filters).__name__}")
    return filters.expression(store)


def _check_texts(texts: Iterable[str]) -> list[str]:
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"query {i} is {'empty' if isinstance(t, str) else repr(t)}: "
                             "every query needs some text")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:  # bytes that were not UTF-8 (surrogate-escaped)
            raise ValueError(f"query {i} is not valid UTF-8 text") from None
    return texts


class Results(list):
    """Hits per query (a list of lists of `Hit`), also as one table: a row per hit with
    query, rank, id, score, row, window, snippet and every metadata column."""

    def to_arrow(self) -> pa.Table:
        rows = [{"query": h.query, "rank": h.rank, "id": h.id, "score": h.score,
                 "row": h.row, "window": h.window, "snippet": h.snippet, **h.metadata}
                for hits in self for h in hits]
        return pa.Table.from_pylist(rows) if rows else pa.table(
            {c: pa.array([], pa.int64() if c != "snippet" else pa.string())
             for c in ("query", "rank", "id", "score", "row", "window", "snippet")})

    def to_pandas(self):
        return self.to_arrow().to_pandas(types_mapper=_nullable_ints)


def _nullable_ints(t: pa.DataType):
    import pandas as pd

    return pd.Int64Dtype() if pa.types.is_integer(t) else None


class Searcher:
    """An opened index plus, loaded on first text query, the encoder for its model.

    `verify` hashes every index file against the manifest when (re)loading; files already
    verified by this process, or stamped by their writer and untouched since, are not
    hashed again. `mmap` (default) memory-maps IVF shards: a process reads the lists its
    queries probe, not gigabytes at start. `watch` (default) reloads the index when its
    manifest changes; `reload()` does it explicitly.
    """

    def __init__(self, index_dir: str | Path, model_dir: str | Path | None = None,
                 encoder=None, verify: bool = True, mmap: bool = True,
                 threads: int | None = None, watch: bool = True):
        self.dir = Path(index_dir)
        self.verify, self.mmap, self.watch = verify, mmap, watch
        self.index: NoteIndex = self._open()
        recorded = self.index.manifest.model_dir
        self.model_dir = Path(model_dir) if model_dir else Path(recorded) if recorded else None
        self.threads = threads
        self._encoder = encoder
        self._pooled: dict = {}  # "index": the index, and per kind its unfiltered patients
        if encoder is not None:
            check_model(self.index.manifest, encoder.fingerprint, self.model_dir)

    def _open(self) -> NoteIndex:
        loaded = manifest_identity(self.dir)
        index = open_index(self.dir, verify=self.verify, mmap=self.mmap)
        self._loaded = loaded  # if a commit landed meanwhile, the next search reloads
        return index

    def reload(self) -> bool:
        """Load the index again if its manifest changed; whether it did."""
        if manifest_identity(self.dir) == self._loaded:
            return False
        index = self._open()
        if index.manifest.model_fingerprint != self.index.manifest.model_fingerprint:
            self._encoder = None  # rebuilt with another model: check it again
        self.index = index
        return True

    def _fresh(self) -> NoteIndex:
        if self.watch:
            self.reload()
        return self.index

    @property
    def encoder(self):
        if self._encoder is None:
            from .encoder import Encoder

            if self.model_dir is None:
                raise ValueError("this index records no model (it was built from embeddings "
                                 "without --model): pass --model to encode text queries")

            if not (self.model_dir / MANIFEST).is_file():
                raise FileNotFoundError(
                    f"model directory {self.model_dir} not found (the index records the model "
                    "it was built with; pass --model if it moved)")
            from .model_manifest import ModelManifest

            check_model(self.index.manifest, ModelManifest.load(self.model_dir).fingerprint,
                        self.model_dir)
            self._encoder = Encoder(self.model_dir, threads=self.threads,
                                    precision=self.index.manifest.encode.get("precision"),
                                    runtime=self.index.manifest.encode.get("runtime"))
        return self._encoder

    @property
    def modes(self) -> tuple[str, ...]:
        """The query modes this index answers: dense, and lexical and hybrid where it has
        a lexical part."""
        return MODES if self._fresh().lexical is not None else ("dense",)

    def auto(self, patients: bool = False) -> Setting:
        """What mode "auto" runs: the setting this index chose on its own notes (or
        patients), the default where it measured none, dense where it has no lexical
        part."""
        m = self._fresh().manifest
        if m.lexical is None:
            return Setting("dense")
        c = m.calibration
        if patients:
            chosen = c.patient_search.get("chosen") if c and c.patient_search else None
            return Setting.from_dict(chosen) if chosen else PATIENT_DEFAULT
        return Setting.from_dict(c.chosen) if c and not c.reason else DEFAULT

    def default_fusion(self) -> Fusion:
        """The fusion an explicit "hybrid" uses: the best this index measured, else RRF."""
        c = self._fresh().manifest.calibration
        return Fusion(**c.hybrid) if c and c.hybrid and not c.reason else Fusion()

    def fusion_for(self, **overrides) -> Fusion:
        """The default fusion with the settings a caller gave; naming another method
        starts from that method's defaults (a calibrated zscore's weights are not RRF's)."""
        base = self.default_fusion()
        if overrides.get("method", base.method) != base.method:
            base = Fusion()
        return replace(base, **overrides)

    def resolve(self, mode: str = AUTO, fusion: Fusion | None = None,
                patients: bool = False) -> tuple[str, Fusion | None]:
        """The mode and fusion a search runs: "auto" is `auto()` (or hybrid with the fusion
        given, where one was); "hybrid" without a fusion is `default_fusion()`. Raises
        ValueError for a mode this index lacks."""
        if fusion is not None and not isinstance(fusion, Fusion):
            raise TypeError(f"fusion must be a Fusion, got {type(fusion).__name__}")
        if mode == AUTO:
            if fusion is None:
                s = self.auto(patients)
                return s.mode, s.fusion
            mode = "hybrid"
        mode = check_mode(mode, self.modes)
        if mode != "hybrid":
            return mode, None
        return mode, fusion or self.default_fusion()

    def describe_auto(self, patients: bool = False) -> dict:
        """What "auto" chose here and what it measured, for `--explain`, the page and the
        API: {"setting", "mode", "fusion", "calibrated", and the measure where one was}."""
        s = self.auto(patients)
        c = self._fresh().manifest.calibration
        out = {**s.to_dict(), "setting": s.label, "calibrated": False}
        if c is None or (c.reason and not patients):
            out["why"] = c.reason if c else "not calibrated (run `mimicsearch calibrate`)"
            return out
        if patients:
            ps = c.patient_search
            row = next((r for r in (ps or {}).get("table", []) if r["chosen"]), None)
            if row is None:
                out["why"] = ("no diagnoses to calibrate patient search on (build-index "
                              "--diagnoses): the documented default")
                return out
            return out | {"calibrated": True, "patients": ps["patients"],
                          "measure": ps["measure"], "score": row["score"]}
        row = next(r for r in c.table if r["chosen"])
        return out | {"calibrated": True, "pairs": c.pairs, "recall@5": row["recall@5"],
                      "recall@10": row["recall@10"]}

    def ids(self) -> list:
        """The ids of the notes the index holds now."""
        return self._fresh().store.ids().to_pylist()

    def notes(self, note_ids: Iterable, text: bool = True) -> list[Note]:
        """The stored notes `note_ids`, in the order given; raises ValueError for an id the
        index does not hold (or no longer holds)."""
        if isinstance(note_ids, (str, bytes)):
            raise TypeError("notes() takes a list of note ids, got one str")
        store = self._fresh().store
        rows = []
        for note_id in note_ids:
            found, missing = store.rows_of([note_id])
            if missing:
                raise ValueError(f"note id {note_id!r} is not in the index (or was removed)")
            rows.append(int(found[0]))  # a note's first window
        return self._notes(store, rows, text)

    def timeline(self, subject_id, text: bool = False) -> list[Note]:
        """A patient's notes in time order (`schema.timeline`: the exact time where stored,
        else the start of the note's date, then its sequence, then index order); raises
        ValueError for a patient the index does not hold."""
        store = self._fresh().store
        schema = store.schema
        rows = np.flatnonzero(store.mask(Filters(subjects=[subject_id]).expression(store)))
        table = store.table.take(pa.array(rows)).select(list(dict.fromkeys(
            c for c in ("row", "window", schema.time, schema.exact_time, schema.sequence)
            if c and c in store.table.column_names)))
        if "window" in table.column_names:
            table = table.filter(pc.equal(table.column("window"), 0))
        ordered = timeline(table, schema, by_subject=False)
        return self._notes(store, ordered.column("row").to_pylist(), text)

    @staticmethod
    def _notes(store, rows: list[int], text: bool) -> list[Note]:
        texts = store.texts.get(rows) if text else [None] * len(rows)
        out = []
        for r, t in zip(store.records(rows), texts):
            meta = {c: r[c] for c in store.metadata_columns}
            out.append(Note(r["id"], *role_values(store.schema, meta), r["snippet"], t,
                            int(r["row"]), meta))
        return out

    def allowed(self, filters: Filters | None) -> np.ndarray | None:
        """The store rows `filters` lets through (None: every row, nothing removed)."""
        store = self._fresh().store
        where = _where(filters, store)
        if where is None and store.live.all():
            return None
        return store.mask(where)

    def search_texts(self, texts: Sequence[str], k: int = 10, filters: Filters | None = None,
                     batch_size: int = 64, mode: str = AUTO,
                     fusion: Fusion | None = None,
                     vectors: np.ndarray | None = None) -> Results:
        """Hits per text (`Results`: a list per query), encoding `batch_size` texts at a time
        with the model's query prompt. `mode`: "auto" (the setting this index calibrated,
        `auto()`), "dense" (the model), "lexical" (BM25 over whole texts; no model needed)
        or "hybrid" (both, fused by `fusion`, default `default_fusion()`).
        `vectors`: the texts' query vectors where already encoded (a server batches them).
        Raises TypeError for a bare str, ValueError for an empty query, a mode the index
        lacks, or a filter the index cannot apply (naming the valid choices)."""
        if isinstance(texts, str):
            raise TypeError("search_texts() takes a list of texts, got one str")
        texts = _check_texts(texts)
        mode, fusion = self.resolve(mode, fusion)
        allowed = self.allowed(filters)
        out = Results()
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            if mode == "lexical":
                vecs = None
            elif vectors is not None:
                vecs = np.atleast_2d(vectors)[start:start + batch_size]
            else:
                vecs = self.encoder.encode(chunk, prompt="query", dim=self.index.dim)
            terms = None if mode == "dense" else analyze(chunk)
            out += self._retrieve(mode, fusion, k, allowed, vecs, terms, start)
        return out

    def search_vectors(self, vectors: np.ndarray, k: int = 10,
                       filters: Filters | None = None) -> Results:
        """Hits per vector (float32 [n, dim] or [dim], L2-normalised, the index's dim)."""
        return self._hits(np.atleast_2d(vectors), k, self.allowed(filters))

    def search_notes(self, note_ids: Iterable, k: int = 10, filters: Filters | None = None,
                     exclude_own_subject: bool = False, mode: str = AUTO,
                     fusion: Fusion | None = None) -> Results:
        """Use stored notes as queries (their stored vectors; their whole text in lexical
        and hybrid modes); the note itself never comes back, and `exclude_own_subject`
        leaves out every note of its patient. Raises ValueError for an id the index does
        not hold (or no longer holds)."""
        if isinstance(note_ids, (str, bytes)):
            raise TypeError("search_notes() takes a list of note ids, got one str")
        filters = filters or Filters()
        mode, fusion = self.resolve(mode, fusion)
        store = self._fresh().store
        out = Results()
        masks: dict = {}  # excluded patient (None: none) -> rows the filter lets through
        for qi, note_id in enumerate(note_ids):
            rows, missing = store.rows_of([note_id])
            if missing:
                raise ValueError(f"note id {note_id!r} is not in the index (or was removed)")
            vec = terms = None
            if mode != "lexical":
                vec = self.pool_query(rows)[None]  # [1, dim]
            if mode != "dense":
                terms = analyze(store.texts.get([int(rows[0])]))
            subject = None
            if exclude_own_subject:
                subject = store.records(rows[:1])[0].get(store.schema.subject)
                if subject is None:
                    raise ValueError(f"note {note_id!r} has no patient (role subject) to "
                                     "exclude")
            if subject not in masks:
                f = filters if subject is None else filters.and_exclude([subject])
                masks[subject] = store.mask(f.expression(store))
            allowed = masks[subject].copy()
            allowed[rows] = False
            out += self._retrieve(mode, fusion, k, allowed, vec, terms, qi)
        return out

    def similar_patients(self, text: str | None = None, *, note_id=None, subject_id=None,
                         k: int = 10, filters: Filters | None = None, mode: str = AUTO,
                         fusion: Fusion | None = None,
                         vector: np.ndarray | None = None) -> list[PatientHit]:
        """Patients (not notes) ranked for a query text, a stored note, or a patient
        ("patients like this one"); the query's own patient never comes back. `filters`
        choose the notes candidates are judged by; a patient query is all of its notes.
        `mimicsearch.patients` says why each mode judges a patient as it does.

        - dense: cosine between the query's vector (the text's, the note's, or the
          patient's pooled vector) and each patient's pooled vector, the mean of its stored
          rows.
        - lexical: BM25 with each patient's notes as one document, for the distinct terms
          of the text, the note, or the patient's whole history; patients matching no term
          are not hits.
        - hybrid: the two patient rankings fused by `fusion` (default `default_fusion()`
          over each one's top `fusion.depth`; weighted fusion scores a patient one ranking
          left out by that ranking's exact score), each hit with its `retrievers` ranks
          and scores.
        - auto (default): `auto(patients=True)`, the setting calibrated on the index's
          patients by their diagnoses, else `calibrate.PATIENT_DEFAULT`.

        `vector`: the text's query vector where the caller encoded it already (the server
        batches encoding).
        """
        if sum(x is not None for x in (text, note_id, subject_id)) != 1:
            raise ValueError("give exactly one of text, note_id or subject_id")
        store = self._fresh().store
        if store.schema.subject is None:
            raise ValueError("this index stores no patient column (role subject: "
                             "SUBJECT_ID, subject_id, person_id or --columns subject=), so "
                             "it cannot rank "
                             f"patients (columns: {store.describe_columns()})")
        if not 0 < k <= MAX_K:
            raise ValueError(f"k={k}: must be between 1 and {MAX_K}")
        mode, fusion = self.resolve(mode, fusion, patients=True)
        query = self._patient_query(note_id, subject_id)
        ranked: dict[str, _PatientRanking] = {}
        if mode != "lexical":
            ranked["dense"] = self._pooled_patients(text, query, filters, vector)
        if mode != "dense":
            ranked["lexical"] = self._document_patients(text, query, filters)
        if mode != "hybrid":
            r = ranked[mode]
            return [r.hit(i, rank, {mode: {"rank": rank, "score": round(float(r.scores[i]), 6)}})
                    for rank, i in enumerate(r.top(k), 1)]
        fused = self._fuse_patients(ranked, fusion, k)
        out = []
        for rank, f in enumerate(fused[:k], 1):
            provenance = {name: {"rank": r_, "score": None if s_ is None else
                                 round(float(s_), 6)}
                          for name, (r_, s_) in f.retrievers.items()}
            r, at = next((r, at) for r in ranked.values()
                         if (at := r.position(f.key)) is not None)
            out.append(replace(r.hit(at, rank, provenance), score=round(f.score, 6)))
        return out

    def cohort(self, text: str | None = None, *, note_id=None, subject_id=None,
               k: int = 10, filters: Filters | None = None, mode: str = AUTO,
               fusion: Fusion | None = None, select: Sequence | None = None,
               name: str | None = None) -> pa.Table:
        """The patients `similar_patients` returns for the same arguments (only those
        whose patient is in `select`, where given) as a cohort table, each row carrying
        the request (with the mode and fusion "auto" resolved to), this index's
        `fingerprint` and the time (`mimicsearch.cohort`)."""
        mode, fusion = self.resolve(mode, fusion, patients=True)
        patients = self.similar_patients(text, note_id=note_id, subject_id=subject_id, k=k,
                                         filters=filters, mode=mode, fusion=fusion)
        return cohorts.build(patients, query={"text": text, "note_id": note_id,
                                              "subject_id": subject_id},
                             mode=mode, fusion=fusion, filters=filters or Filters(), k=k,
                             index=self.fingerprint, select=select, name=name)

    @property
    def fingerprint(self) -> str:
        """A short hash of the index manifest, which holds every file's hash: names the
        index state a result came from (it changes with every commit)."""
        m = self._fresh().manifest.to_dict()
        return hashlib.sha256(json.dumps(m, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _patient_query(self, note_id, subject_id) -> tuple[np.ndarray, object] | None:
        """(the store rows, the patient) of a note or patient query; None for a text."""
        if note_id is None and subject_id is None:
            return None
        store = self._fresh().store
        if subject_id is not None:
            rows = np.flatnonzero(store.mask(Filters(subjects=[subject_id]).expression(store)))
            if not len(rows):
                raise ValueError(f"patient {subject_id!r} has no notes left in this index")
        else:
            rows, missing = store.rows_of([note_id])
            if missing:
                raise ValueError(f"note id {note_id!r} is not in the index (or was removed)")
        return rows, store.records(rows[:1])[0].get(store.schema.subject)

    def _pooled_patients(self, text, query, filters: Filters | None,
                         vector: np.ndarray | None = None) -> _PatientRanking:
        """Every candidate patient's pooled cosine; a hit's best notes are its rows
        nearest the query."""
        index = self._fresh()
        store = index.store
        own = None
        if query is None and vector is not None:
            q = np.asarray(vector, np.float32).reshape(-1)
        elif query is None:
            q = self.encoder.encode(_check_texts([text]), prompt="query", dim=index.dim)[0]
        else:
            rows, own = query
            q = pool_rows(index, rows)
        patients = self._patients(index, filters, pool)
        scores = patients.vectors @ q
        if (mine := patients.position(own)) is not None:
            scores[mine] = -np.inf

        def evidence(i: int) -> tuple[np.ndarray, np.ndarray]:
            rows = patients.rows[i]
            return rows, index.reconstruct(rows) @ q
        return _PatientRanking(patients.subjects, scores, store, evidence, "dense")

    def _document_patients(self, text, query, filters: Filters | None) -> _PatientRanking:
        """Every candidate patient's BM25 of its notes as one document; a hit's best notes
        are its notes BM25 ranks highest for the query's terms."""
        index = self._fresh()
        store, lexical = index.store, index.lexical
        own = None
        if query is None:
            texts = _check_texts([text])
        else:
            rows, own = query
            docs = lexical.doc_of[rows]
            texts = store.texts.get([int(r) for r in lexical.rows[docs[docs >= 0]]])
        terms = sorted({t for doc in analyze(texts) for t in doc})
        patients = self._patients(index, filters, documents)
        scores = lexical.grouped_scores(terms, patients.group,
                                        len(patients.subjects)).astype(np.float64)
        if (mine := patients.position(own)) is not None:
            scores[mine] = -np.inf
        scores[scores <= 0] = -np.inf  # a patient sharing no term with the query is no hit
        note_scores = lexical.scores(terms)

        def evidence(i: int) -> tuple[np.ndarray, np.ndarray]:
            docs = np.flatnonzero(patients.group == i)
            return lexical.rows[docs], note_scores[docs]
        return _PatientRanking(patients.subjects, scores, store, evidence, "lexical")

    def _patients(self, index: NoteIndex, filters: Filters | None, kind):
        """`kind(index, allowed)` (pooled vectors or documents) of the patients the filters
        let through; those of the unfiltered index are kept until it changes."""
        where = _where(filters, index.store)
        if where is not None:
            return kind(index, index.store.mask(where))
        if self._pooled.get("index") is not index:
            self._pooled = {"index": index}
        if kind not in self._pooled:
            self._pooled[kind] = kind(index, None)
        return self._pooled[kind]

    def pool_query(self, rows: np.ndarray) -> np.ndarray:
        """A stored note's query vector: the normalised mean of its rows (windows)."""
        return pool_rows(self.index, rows)  # the state the caller's rows came from

    @staticmethod
    def _fuse_patients(ranked: dict, fusion: Fusion, k: int) -> list:
        keep = min(max(fusion.depth, k), MAX_K)
        return fuse({name: [(r.subjects[i], r.scores[i]) for i in r.top(keep)]
                     for name, r in ranked.items()}, fusion,
                    {name: r.exact for name, r in ranked.items()}, limit=k)

    def _retrieve(self, mode: str, fusion: Fusion | None, k: int, allowed,
                  vecs: np.ndarray | None, terms: list[list[str]] | None,
                  first_query: int) -> Results:
        if mode == "dense":
            return self._hits(vecs, k, allowed, first_query)
        if mode == "lexical":
            return self._lexical_hits(terms, k, allowed, first_query)
        depth = min(max(k, fusion.depth), MAX_K)
        dense = self._hits(vecs, depth, allowed, first_query)
        lexical = self._lexical_hits(terms, depth, allowed, first_query)
        return Results(self._fused(d, x, self._exact(vec, t), fusion, k)
                       for d, x, vec, t in zip(dense, lexical, vecs, terms))

    def _exact(self, vec: np.ndarray, terms: list[str]) -> dict:
        """Per retriever, the scores of given notes (by id) for one query: what weighted
        fusion gives a note that retriever did not return."""
        index = self.index

        def best_of_rows(ids, score_rows):  # a note's best row, as its hit would score
            rows, _ = index.store.rows_of(ids)
            owner = index.store.table.column("id").take(pa.array(rows)).to_pylist()
            best: dict = {}
            for i, score in zip(owner, score_rows(rows)):
                best[i] = max(best.get(i, -np.inf), float(score))
            return [best.get(i, 0.0) for i in ids]

        def dense_exact(ids):
            return best_of_rows(ids, lambda rows: index.reconstruct(rows) @ vec)

        def lexical_exact(ids):  # only a note's first row is a document; the rest score 0
            return best_of_rows(ids, lambda rows: index.lexical.row_scores(terms, rows))
        return {"dense": dense_exact, "lexical": lexical_exact}

    @staticmethod
    def _fused(dense: list[Hit], lexical: list[Hit], exact: dict, fusion: Fusion,
               k: int) -> list[Hit]:
        by_id = {h.id: h for h in lexical} | {h.id: h for h in dense}
        fused = fuse({"dense": [(h.id, h.score) for h in dense],
                      "lexical": [(h.id, h.score) for h in lexical]}, fusion, exact,
                     limit=k)
        return [replace(by_id[f.key], rank=rank, score=round(f.score, 6), retrievers={
            name: {"rank": r, "score": None if s is None else round(float(s), 6)}
            for name, (r, s) in f.retrievers.items()})
            for rank, f in enumerate(fused, 1)]

    def _lexical_hits(self, terms: list[list[str]], k: int, allowed,
                      first_query: int = 0) -> Results:
        index = self.index
        store = index.store
        meta_cols = list(store.metadata_columns)
        out = Results()
        for qi, query_terms in enumerate(terms):
            scores, rows = index.lexical.search(query_terms, min(k, MAX_K), allowed)
            hits = []
            for rank, (score, row, r) in enumerate(zip(scores, rows, store.records(rows)), 1):
                hits.append(_hit(first_query + qi, rank, score, row, r, meta_cols, "lexical",
                                 store.schema))
            out.append(hits)
        return out

    def _hits(self, vecs: np.ndarray, k: int, allowed, first_query: int = 0) -> Results:
        index = self.index
        store = index.store
        windows = "window" in store.table.column_names
        meta_cols = list(store.metadata_columns)
        out = Results()
        # One note may own several window rows: fetch more until k distinct notes or all.
        fetch = min(4 * k if windows else k, MAX_K)
        while True:
            D, I = index.search(vecs, fetch, allowed)
            out = Results()
            short = False
            for qi, (scores, rows) in enumerate(zip(D, I)):
                keep = rows >= 0
                recs = store.records(rows[keep])
                hits, seen = [], set()
                for score, row, r in zip(scores[keep], rows[keep], recs):
                    if r["id"] in seen:
                        continue
                    seen.add(r["id"])
                    hits.append(_hit(first_query + qi, len(hits) + 1, score, row, r,
                                     meta_cols, "dense", store.schema))
                    if len(hits) == k:
                        break
                short |= len(hits) < k and keep.all()
                out.append(hits)
            if not windows or not short or fetch >= min(index.ntotal, MAX_K):
                return out
            fetch = min(index.ntotal, fetch * 4, MAX_K)
