"""Patients as the units "patients like this one" ranks: a pooled vector (dense) and a
document of all its notes (lexical), both over the notes a filter lets through.

Dense: each patient is the normalised mean of every stored row of its notes, every window
of them where the index keeps windows. Why rows and not notes: a discharge summary runs to
thousands of tokens and names the admission's conditions near its end, past what one
truncated vector sees; pooling the rows of an index built with `--long windows` lets a
history count in proportion to what it says.

Lexical: each patient is one BM25 document, its notes' texts joined (term counts summed),
scored by `LexicalIndex.grouped_scores`. Why not votes of the notes BM25 retrieves: votes
see only each query's top notes and count a patient once per query however much of its
history matches; BM25 over whole histories was 4.9 points of ICD-9 chapter overlap@10
above note votes on the transfer corpus (BENCHMARKS, "Patient search").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BLOCK = 1 << 16  # rows decoded at a time while pooling


@dataclass(frozen=True)
class Patients:
    """The pooled patients of one index state under one set of filters."""

    subjects: list  # SUBJECT_ID values, as stored
    vectors: np.ndarray  # float32 [patients, dim], L2-normalised
    rows: list[np.ndarray]  # the store rows pooled into each patient, ascending

    def position(self, subject) -> int | None:
        try:
            return self.subjects.index(subject)
        except ValueError:
            return None


@dataclass(frozen=True)
class PatientDocuments:
    """The patients of one index state under one set of filters, as lexical documents."""

    subjects: list  # SUBJECT_ID values, as stored
    group: np.ndarray  # int64 per lexical document (note): its patient's position, -1 none

    def position(self, subject) -> int | None:
        try:
            return self.subjects.index(subject)
        except ValueError:
            return None


def pool_rows(index, rows: np.ndarray) -> np.ndarray:
    """The normalised mean of the stored vectors of `rows` (float32 [dim])."""
    v = index.reconstruct(rows).sum(axis=0)
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def _by_subject(store, rows: np.ndarray) -> tuple[np.ndarray, list, np.ndarray]:
    """(the rows with a patient, the distinct patients, each kept row's patient
    position); rows without one (the subject role) belong to no patient."""
    subject = store.table.column(store.schema.subject).take(pa.array(rows))
    known = pc.is_valid(subject).to_numpy(zero_copy_only=False)
    rows, subject = rows[known], subject.filter(pa.array(known))
    if not len(rows):
        return rows, [], np.zeros(0, np.int64)
    codes = pc.dictionary_encode(subject.combine_chunks())
    return (rows, codes.dictionary.to_pylist(),
            codes.indices.to_numpy(zero_copy_only=False).astype(np.int64))


def pool(index, allowed: np.ndarray | None) -> Patients:
    """Every patient with a row in `allowed` (None: every live row), pooled over those rows."""
    store = index.store
    rows, subjects, inverse = _by_subject(
        store, np.flatnonzero(store.live if allowed is None else allowed))
    if not len(rows):
        return Patients([], np.zeros((0, index.dim), np.float32), [])
    if allowed is None and index.manifest.patients is not None:
        sums = _kept_sums(index, subjects)
    else:
        sums = np.zeros((len(subjects), index.dim), np.float32)
        for start in range(0, len(rows), BLOCK):
            np.add.at(sums, inverse[start:start + BLOCK],
                      index.reconstruct(rows[start:start + BLOCK]))
    sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    order = np.argsort(inverse, kind="stable")
    groups = np.split(rows[order], np.cumsum(np.bincount(inverse))[:-1])
    return Patients(subjects, sums, groups)


def _kept_sums(index, subjects: list) -> np.ndarray:
    """The unfiltered patients' vector sums the index keeps (index/pooled.py), in the
    order of `subjects`: no pass over the stored rows."""
    from .index.pooled import PatientSums

    kept = PatientSums.read(index.dir, index.manifest.patients, index.dim)
    column = index.store.table.column(index.store.schema.subject)
    keys = column.take(pa.array(kept.rows))
    at = pc.index_in(keys, value_set=pa.array(subjects, column.type)).to_numpy(
        zero_copy_only=False)
    if len(kept.rows) != len(subjects) or np.isnan(at.astype(float)).any():
        raise ValueError(f"{index.dir / index.manifest.patients.file} does not hold the "
                         "index's live patients; rebuild the index with `build-index`")
    sums = np.zeros((len(subjects), index.dim), np.float32)
    sums[at.astype(np.int64)] = kept.sums
    return sums


def documents(index, allowed: np.ndarray | None) -> PatientDocuments:
    """Every patient with a note in `allowed` (None: every live note), as the lexical
    documents (notes) of its that `allowed` lets through."""
    store, lexical = index.store, index.lexical
    ok = store.live[lexical.rows] if allowed is None else allowed[lexical.rows]
    docs = np.flatnonzero(ok)
    rows, subjects, inverse = _by_subject(store, lexical.rows[docs])
    group = np.full(len(lexical.rows), -1, np.int64)
    group[lexical.doc_of[rows]] = inverse
    return PatientDocuments(subjects, group)


MATCHES = 3  # a patient hit's best notes, shown as its evidence


def profile(store, rows: np.ndarray) -> dict:
    """What a cohort table and the page show of a patient beside its score, over the notes
    it was judged by: how many, the admissions they belong to, their categories (most
    notes first) and their first and last dates."""
    schema = store.schema
    admission, category, time = schema.admission, schema.category, schema.time
    wanted = ("row", "window", admission, category, time)
    t = store.table.select(list(dict.fromkeys(
        c for c in wanted if c and c in store.table.column_names))).take(pa.array(rows))
    if "window" in t.column_names:  # one entry per note, not per window
        t = t.filter(pc.equal(t.column("window"), 0))
    out = {"notes": t.num_rows, "admissions": [], "categories": [], "first_date": None,
           "last_date": None}
    if admission in t.column_names:
        out["admissions"] = sorted(pc.unique(t.column(admission).drop_null()).to_pylist())
    if category in t.column_names:
        counts = pc.value_counts(t.column(category).drop_null()).to_pylist()
        out["categories"] = [c["values"] for c in
                             sorted(counts, key=lambda c: (-c["counts"], c["values"]))]
    if time in t.column_names and t.num_rows:
        mm = pc.min_max(t.column(time)).as_py()
        out["first_date"], out["last_date"] = mm["min"], mm["max"]
    return out


def best_notes(ids: list, scores: np.ndarray, n: int = MATCHES) -> list[int]:
    """Positions of the `n` best-scoring distinct notes among rows of ids `ids`."""
    out, seen = [], set()
    for i in np.argsort(-scores, kind="stable"):
        if ids[i] in seen:
            continue
        seen.add(ids[i])
        out.append(int(i))
        if len(out) == n:
            break
    return out
