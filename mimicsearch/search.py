"""Querying an index: texts, stored notes or vectors in, plain hit records out.

Text queries are encoded with the model the index was built with (checked by fingerprint,
since vectors of another model live in another space and would return nonsense silently).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .fileio import MANIFEST
from .index import NoteIndex, check_model, open_index

__all__ = ["Filters", "Hit", "Searcher", "check_model"]


@dataclass(frozen=True)
class Filters:
    """Restrict hits to some patients / note categories, or leave some patients out."""

    subjects: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    exclude_subjects: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.subjects or self.categories or self.exclude_subjects)


@dataclass(frozen=True)
class Hit:
    query: int
    rank: int
    id: int | str
    score: float
    subject_id: str | None
    hadm_id: str | None
    category: str | None
    chartdate: str | None
    snippet: str | None
    row: int
    window: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class Searcher:
    """An opened index plus, loaded on first text query, the encoder for its model."""

    def __init__(self, index_dir: str | Path, model_dir: str | Path | None = None,
                 encoder=None, verify: bool = True, mmap: bool = False,
                 threads: int | None = None):
        self.index: NoteIndex = open_index(index_dir, verify=verify, mmap=mmap)
        recorded = self.index.manifest.model_dir
        self.model_dir = Path(model_dir) if model_dir else Path(recorded) if recorded else None
        self.threads = threads
        self._encoder = encoder
        if encoder is not None:
            check_model(self.index.manifest, encoder.fingerprint, self.model_dir)

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
                                    precision=self.index.manifest.encode.get("precision"))
        return self._encoder

    def _query_dim(self) -> int:
        """Queries are cut to the dimension the index's notes were encoded at."""
        return self.index.dim

    def search_texts(self, texts: Sequence[str], k: int = 10, filters: Filters = Filters(),
                     batch_size: int = 64) -> list[list[Hit]]:
        """Hits per text, encoding and searching `batch_size` texts at a time."""
        if isinstance(texts, str):
            raise TypeError("search_texts() takes a list of texts, got one str")
        allowed = self._allowed(filters)
        out: list[list[Hit]] = []
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start:start + batch_size])
            vecs = self.encoder.encode(chunk, prompt="query", dim=self._query_dim())
            out += self._hits(vecs, k, allowed, first_query=start)
        return out

    def search_vectors(self, vectors: np.ndarray, k: int = 10,
                       filters: Filters = Filters()) -> list[list[Hit]]:
        return self._hits(np.atleast_2d(vectors), k, self._allowed(filters))

    def search_notes(self, note_ids: Sequence, k: int = 10, filters: Filters = Filters(),
                     exclude_own_subject: bool = False) -> list[list[Hit]]:
        """Use stored notes as queries (their stored vectors); the note itself never comes
        back, and `exclude_own_subject` leaves out every note of its patient."""
        store = self.index.store
        out = []
        for qi, note_id in enumerate(note_ids):
            rows, missing = store.rows_of([note_id])
            if missing:
                raise ValueError(f"note id {note_id!r} is not in the index (or was removed)")
            vec = self.index.reconstruct(rows).mean(axis=0, keepdims=True)  # [1, dim]
            vec /= np.linalg.norm(vec, axis=1, keepdims=True)
            f = filters
            if exclude_own_subject:
                subject = store.records(rows[:1])[0]["SUBJECT_ID"]
                if subject is None:
                    raise ValueError(f"note {note_id!r} has no SUBJECT_ID to exclude")
                f = Filters(f.subjects, f.categories, (*f.exclude_subjects, subject))
            allowed = store.mask(f.subjects, f.categories, f.exclude_subjects)
            allowed[rows] = False
            out += self._hits(vec, k, allowed, first_query=qi)
        return out

    def _allowed(self, filters: Filters) -> np.ndarray | None:
        store = self.index.store
        if not filters and store.live.all():
            return None
        return store.mask(filters.subjects, filters.categories, filters.exclude_subjects)

    def _hits(self, vecs: np.ndarray, k: int, allowed, first_query: int = 0) -> list[list[Hit]]:
        store = self.index.store
        windows = "window" in store.table.column_names
        # One note may own several window rows: fetch more, keep each note's best window.
        fetch = 4 * k if windows else k
        D, I = self.index.search(vecs, fetch, allowed)
        out = []
        for qi, (scores, rows) in enumerate(zip(D, I)):
            keep = rows >= 0
            recs = store.records(rows[keep])
            hits, seen = [], set()
            for score, row, r in zip(scores[keep], rows[keep], recs):
                if r["id"] in seen:
                    continue
                seen.add(r["id"])
                hits.append(Hit(first_query + qi, len(hits) + 1, r["id"], round(float(score), 6),
                                r["SUBJECT_ID"], r["HADM_ID"], r["CATEGORY"], r["CHARTDATE"],
                                r["snippet"], int(row), r.get("window")))
                if len(hits) == k:
                    break
            out.append(hits)
        return out
