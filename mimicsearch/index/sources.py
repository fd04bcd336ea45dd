"""Where an index build reads its vectors: arrays in memory or an embeddings directory.

A source is read by row ranges, so the local loop and each Spark task read their piece of
the corpus through the same call; every row comes with its metadata (and snippet).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa

from ..embeddings import complete_manifest, read_shard, verify_shard
from ..schema import NoteSchema, for_store

NORM_TOLERANCE = 1e-3


class VectorSource(Protocol):
    """Normalised vectors with their metadata, readable more than once, in row order."""

    rows: int
    dim: int
    id_type: str
    description: str
    schema: NoteSchema  # which metadata column plays which role

    def read(self, first: int, end: int) -> Iterator[tuple[np.ndarray, pa.Table]]:
        """(float32 [n, dim], metadata) batches of the rows [first, end), in order."""
        ...

    def take(self, rows: np.ndarray) -> np.ndarray:
        """float32 [len(rows), dim] of sorted, distinct `rows`."""
        ...


class ArraySource:
    """Vectors already in memory: float32 [n, dim] plus a metadata table with an `id`;
    `schema` gives its columns' roles (default: the layout the column names fit)."""

    def __init__(self, vectors: np.ndarray, metadata: pa.Table, batch_rows: int = 65536,
                 description: str = "array", schema: NoteSchema | None = None):
        if metadata.num_rows != len(vectors):
            raise ValueError(f"{len(vectors)} vectors but {metadata.num_rows} metadata rows")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.metadata = metadata
        self.rows, self.dim = self.vectors.shape
        id_col = metadata.column("id") if "id" in metadata.column_names else None
        if id_col is None:
            raise ValueError(f"metadata has no 'id' column (columns: {metadata.column_names})")
        self.id_type = "int64" if pa.types.is_integer(id_col.type) else "string"
        self.batch_rows = batch_rows
        self.description = description
        self.schema = schema or for_store(metadata.column_names)

    def read(self, first: int, end: int) -> Iterator[tuple[np.ndarray, pa.Table]]:
        for i in range(first, end, self.batch_rows):
            n = min(self.batch_rows, end - i)
            yield self.vectors[i:i + n], self.metadata.slice(i, n)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.vectors[rows]


class EmbeddingsSource:
    """An embeddings directory written by `mimicsearch encode`, read shard by shard with
    the snippets encode cut. `verify()` hashes every file once; reads do not hash again."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = complete_manifest(self.path)
        self.rows, self.dim = self.manifest.rows, self.manifest.dim
        self.id_type = self.manifest.id_type
        self.description = f"embeddings:{self.path}"
        self.schema = self.manifest.schema
        self._starts = np.cumsum([0] + [s.rows for s in self.manifest.shards])

    def verify(self) -> EmbeddingsSource:
        for s in self.manifest.shards:
            verify_shard(self.path, s)
        return self

    def _overlapping(self, first: int, end: int):
        for s, lo, hi in zip(self.manifest.shards, self._starts[:-1], self._starts[1:]):
            if lo < end and first < hi:
                yield s, int(lo)

    def read(self, first: int, end: int) -> Iterator[tuple[np.ndarray, pa.Table]]:
        for s, lo in self._overlapping(first, end):
            table, mat = read_shard(self.path, s, snippets=True)
            a, b = max(first - lo, 0), min(end - lo, s.rows)
            yield mat[a:b], table.slice(a, b - a)

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), np.float32)
        if not len(rows):
            return out
        for s, lo in self._overlapping(int(rows[0]), int(rows[-1]) + 1):
            a, b = np.searchsorted(rows, [lo, lo + s.rows])
            if a < b:
                _, mat = read_shard(self.path, s, columns=["id"])
                out[a:b] = mat[rows[a:b] - lo]
        return out


def check_vectors(x: np.ndarray, dim: int, what: str = "vectors") -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} have shape {x.shape}, expected [n, {dim}]")
    if len(x) and not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    norms = np.linalg.norm(x, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1) > NORM_TOLERANCE)
    if len(bad):
        raise ValueError(f"{what} are not L2-normalised (row {bad[0]} has norm "
                         f"{norms[bad[0]]:.4f}); inner product needs unit vectors")
    return x
