"""A loaded index directory: its shards searched together, with filters, by store row."""
from __future__ import annotations

import os
import time
from pathlib import Path

import faiss
import numpy as np

from ..fileio import MANIFEST
from .faiss_ops import (
    merge_topk,
    omp_threads,
    read_faiss,
    search_knob,
    selector_params,
    stored_vectors,
)
from .lexical import LexicalIndex
from .manifest import IndexManifest
from .store import MetadataStore

# A filter passing at most this many rows is answered exactly from reconstructed vectors;
# above it faiss searches with an id selector (exact again, up to SUBSET_FALLBACK_ROWS, for
# queries whose approximate search found fewer than k allowed rows).
EXACT_SUBSET_ROWS = 8192
SUBSET_FALLBACK_ROWS = 262_144
SUBSET_BLOCK_ROWS = 16_384
# Where at least this share of the rows passes, one unfiltered search for 1.5·k/share rows
# finds k allowed ones faster than a selector (bench/bench_filters.py: HNSW from about a
# quarter, IVF from about a half); queries it leaves short go to the selector. A selector
# always wins on Flat: it skips the rejected rows' distances.
OVERFETCH_SHARE = {"efSearch": 0.2, "nprobe": 0.5}
OVERFETCH_SHARE_DEFAULT = 2.0  # never
MAX_K = 10_000  # the most hits a search returns (a larger k only costs memory)
FEW_QUERIES = 16  # below this many queries a search runs on one thread


class NoteIndex:
    """The shards of an index directory, searched together with a global top-k."""

    def __init__(self, index_dir: str | Path, manifest: IndexManifest,
                 shards: list[faiss.Index], store: MetadataStore,
                 lexical: LexicalIndex | None = None):
        self.dir = Path(index_dir)
        self.manifest = manifest
        self.shards = shards
        self.store = store
        self.lexical = lexical  # BM25 over whole texts, where the index has that part
        self._first_rows = np.array([s.first_row for s in manifest.shards], dtype=np.int64)
        self.knob = search_knob(shards[0]) if shards else None
        self.set_search_params(manifest.search_params)

    @property
    def dim(self) -> int:
        return self.manifest.dimension

    @property
    def ntotal(self) -> int:
        return sum(s.ntotal for s in self.shards)

    def set_search_params(self, params: dict) -> None:
        ps = faiss.ParameterSpace()
        for name, value in params.items():
            for s in self.shards:
                try:
                    ps.set_index_parameter(s, name, int(value))
                except RuntimeError:
                    raise ValueError(f"search parameter {name}={value} does not apply to "
                                     f"index {self.manifest.index_key!r}") from None

    def exhaustive_params(self) -> dict:
        return {self.knob[0]: self.knob[1]} if self.knob else {}

    def search(self, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) over all shards: min(k, vectors held) columns, rows -1 where
        fewer pass the filter.

        `allowed` (bool per store row) restricts hits: small sets are searched exactly on
        reconstructed vectors, others by faiss itself with an id selector (a bitmap), or,
        when most rows pass, by one larger unfiltered search whose rejected hits are dropped.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)  # [nq, dim]
        if not 0 < k <= MAX_K:
            raise ValueError(f"k={k}: must be between 1 and {MAX_K}")
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries have shape {q.shape}, expected [n, {self.dim}]")
        k = min(k, max(self.ntotal, 1))  # faiss allocates k results a query: never more
        if allowed is None:
            return self._search_all(q, k)
        return self._search_allowed(q, k, np.asarray(allowed, dtype=bool))

    def _search_allowed(self, q, k, allowed):
        n_allowed = int(allowed.sum())
        if n_allowed == 0:
            return _no_hits(len(q), k)
        if n_allowed <= EXACT_SUBSET_ROWS and self._can_reconstruct():
            return self._search_subset(q, k, np.flatnonzero(allowed))

        def short(I):  # queries with fewer than k hits where k allowed rows exist
            return (I < 0).any(axis=1) if n_allowed >= k else np.zeros(len(q), bool)

        share = n_allowed / max(self.ntotal, 1)
        if share >= OVERFETCH_SHARE.get(self.knob[0] if self.knob else "",
                                        OVERFETCH_SHARE_DEFAULT):
            fetch = min(max(self.ntotal, 1), max(2 * k, int(np.ceil(1.5 * k / share))))
            D, I = self._search_all(q, fetch)
            ok = (I >= 0) & allowed[np.clip(I, 0, None)]
            D, I = merge_topk(np.where(ok, D, -np.inf), np.where(ok, I, -1), k)
            if (few := short(I)).any():
                D[few], I[few] = self._search_all(q[few], k, allowed)
        else:
            D, I = self._search_all(q, k, allowed)
        few = short(I)
        if few.any() and n_allowed <= SUBSET_FALLBACK_ROWS and self._can_reconstruct():
            # Approximate indexes only look at part of the data (nprobe lists, efSearch
            # nodes); when that part holds too few allowed rows, score the allowed rows.
            D[few], I[few] = self._search_subset(q[few], k, np.flatnonzero(allowed))
        return D, I

    def _search_all(self, q: np.ndarray, k: int,
                    allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        bitmap = None if allowed is None else np.packbits(allowed, bitorder="little")
        selector = None if bitmap is None else faiss.IDSelectorBitmap(
            len(allowed), faiss.swig_ptr(bitmap))
        Ds, Is = [], []
        with omp_threads(1 if len(q) < FEW_QUERIES else None):
            for s in self.shards:
                if s.ntotal:
                    if selector is None:
                        D, I = s.search(q, k)
                    else:
                        D, I = s.search(q, k, params=selector_params(s, selector))
                    Ds.append(D)
                    Is.append(I)
        if not Ds:
            return _no_hits(len(q), k)
        return merge_topk(np.hstack(Ds), np.hstack(Is), k)

    def _can_reconstruct(self) -> bool:
        if not hasattr(self, "_reconstructable"):
            try:
                if self.shards and self.ntotal:
                    self.reconstruct(np.array([self._some_row()], dtype=np.int64))
                self._reconstructable = True
            except (RuntimeError, ValueError):
                self._reconstructable = False
        return self._reconstructable

    def _some_row(self) -> int:
        live = np.flatnonzero(self.store.live)
        return int(live[0]) if len(live) else 0

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        """Stored vectors of `rows` (decoded from PQ codes for compressed indexes)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), np.float32)
        shard_of = np.searchsorted(self._first_rows, rows, side="right") - 1
        for si in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == si)
            out[sel] = stored_vectors(self.shards[si], rows[sel])
        return out

    def _search_subset(self, q, k, rows):
        """Exact top-k over `rows`, decoding their stored vectors a block at a time."""
        heap = faiss.ResultHeap(len(q), k, keep_max=True)
        for start in range(0, len(rows), SUBSET_BLOCK_ROWS):
            block = rows[start:start + SUBSET_BLOCK_ROWS]
            scores = q @ self.reconstruct(block).T  # [nq, block]
            heap.add_result(scores, np.broadcast_to(block, scores.shape))
        heap.finalize()
        D, I = heap.D, heap.I
        D[I < 0] = -np.inf
        return D, I


RELOAD_ATTEMPTS = 5  # a writer may replace files between our manifest read and file reads


def _no_hits(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1)


def manifest_identity(index_dir: str | Path) -> tuple | None:
    """What changes whenever a writer commits (the manifest is replaced, never edited);
    None where there is no manifest."""
    try:
        st = os.stat(Path(index_dir) / MANIFEST)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def open_index(index_dir: str | Path, verify: bool = True, mmap: bool = False) -> NoteIndex:
    """Load an index directory, checking every file against the manifest's sha256 first.
    A writer committing meanwhile (its old files unlinked under us) makes it read again, so
    a reader gets the state before or after a write, never an error from it."""
    for attempt in range(RELOAD_ATTEMPTS):
        before = manifest_identity(index_dir)
        try:
            return _open_index(index_dir, verify, mmap)
        except (FileNotFoundError, ValueError):
            if attempt == RELOAD_ATTEMPTS - 1 or manifest_identity(index_dir) == before:
                raise  # not a writer's commit: a real fault
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _open_index(index_dir: str | Path, verify: bool, mmap: bool) -> NoteIndex:
    index_dir = Path(index_dir)
    manifest = IndexManifest.load(index_dir)
    shards = []
    for s in manifest.shards:
        path = s.index.verify(index_dir) if verify else index_dir / s.index.file
        if s.data is not None:
            if verify:
                s.data.verify(index_dir)
            index = read_faiss(path, faiss.IO_FLAG_ONDISK_SAME_DIR)
        else:
            index = read_faiss(path, faiss.IO_FLAG_MMAP if mmap and _is_ivf_key(manifest)
                               else 0)
        if index.d != manifest.dimension or index.ntotal != s.ntotal:
            raise ValueError(f"{path} holds {index.ntotal} vectors of dim {index.d}; the "
                             f"manifest says {s.ntotal} of dim {manifest.dimension}")
        shards.append(index)
    store = MetadataStore.load(index_dir, manifest, verify=verify)
    lexical = None if manifest.lexical is None else LexicalIndex.open(
        index_dir, manifest.lexical, store.live, verify)
    return NoteIndex(index_dir, manifest, shards, store, lexical)


def _is_ivf_key(manifest: IndexManifest) -> bool:
    return "IVF" in manifest.index_key.upper()

