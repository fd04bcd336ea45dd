"""FAISS indexes over note embeddings: choose, build in shards, merge, search, measure.

Vectors are L2-normalised and compared by inner product (cosine). A faiss id is the row
number in the metadata store beside the index (store.py), so hits map to notes without a
lookup table and removals never renumber anything. IVF indexes take ids natively; every
other family is wrapped in IndexIDMap2.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np
import pyarrow as pa
from tqdm import tqdm

from .fileio import atomic_path, writer_lock
from .index_manifest import (
    MANIFEST,
    BuildParams,
    Family,
    FileRef,
    IndexManifest,
    Quality,
    Shard,
    check_model,
)
from .store import SNIPPET_CHARS, MetadataStore, store_table, write_deleted, write_part

# Choice thresholds (see choose_index): exact search stays fast up to FLAT_MAX_ROWS. HNSW32
# reaches recall@10 0.966 at efSearch 32 on 50k clustered 768-d vectors, but at 1M it misses
# 0.95 even at efSearch 2048 (0.930, 7.4 ms) where IVF4096,Flat gets 0.976 at 1.2 ms
# (BENCHMARKS.md), so past HNSW_MAX_ROWS IVF is both more accurate and faster.
FLAT_MAX_ROWS = 20_000
HNSW_MAX_ROWS = 250_000
HNSW_M = 32
TRAIN_PER_LIST = 64  # k-means sample per IVF list (faiss warns below 39)
PQ_TRAIN_MIN = 256 * 39  # 8-bit PQ codebooks want ≥ 39 points per centroid
PQ_CANDIDATES = (64, 48, 32, 16, 8)  # bytes per vector, most accurate first
EVAL_QUERIES = 200
EVAL_K = 10
NPROBE_LADDER = tuple(2 ** i for i in range(17))
EF_LADDER = (16, 32, 64, 128, 256, 512, 1024, 2048)
# A filter passing at most this many rows is answered exactly from reconstructed vectors;
# above it, over-fetch and filter (and fall back to exact up to SUBSET_FALLBACK_ROWS).
EXACT_SUBSET_ROWS = 8192
SUBSET_FALLBACK_ROWS = 262_144
SUBSET_BLOCK_ROWS = 16_384
NORM_TOLERANCE = 1e-3
FEW_QUERIES = 16  # below this many queries a search runs on one thread


# ---------------------------------------------------------------------------------------
# Choosing an index


@dataclass(frozen=True)
class IndexChoice:
    key: str
    family: Family
    nlist: int
    estimated_bytes: int
    reason: str


def parse_bytes(text: str | int | None) -> int | None:
    """'8G', '512M', '1.5GiB', '1000000' -> bytes; None stays None (no budget)."""
    if text is None or isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"memory size {text!r} not understood; use e.g. 512M, 8G, 1.5GiB")
    scale = 1024 ** " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * scale)


def default_memory_budget() -> int:
    """Half of this machine's RAM: the rest is for the encoder, the OS and other work."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def nlist_for(n: int) -> int:
    """IVF lists ≈ 4·√N as a power of two, capped so each list trains on ≥ 39 points."""
    target = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))
    return max(1, min(target, n // 39))


def pq_bytes_for(dim: int) -> tuple[int, ...]:
    return tuple(m for m in PQ_CANDIDATES if m <= dim and dim % m == 0) or (dim,)


def estimate_bytes(family: Family, n: int, dim: int, nlist: int = 0, pq_m: int = 0) -> int:
    """RAM an index of `n` vectors needs to be searched (codes, ids, graph, centroids)."""
    if family is Family.FLAT:
        return n * (4 * dim + 40)  # IDMap2: id + reverse map
    if family is Family.HNSW:
        return n * (4 * dim + 40 + int(2 * HNSW_M * 4 * 1.1))  # level-0 links + upper levels
    if family is Family.IVF_FLAT:
        return n * (4 * dim + 8) + nlist * 4 * dim
    if family is Family.IVF_SQ8:
        return n * (dim + 8) + nlist * 4 * dim
    if family is Family.IVF_PQ:
        return n * (pq_m + 8) + nlist * 4 * dim + 4 * dim * dim  # codes, ids, centroids, OPQ
    return n * (4 * dim + 40)


def family_of(key: str) -> Family:
    k = key.upper()
    if "IVF" in k:
        if re.search(r"(^|,)PQ\d", k):
            return Family.IVF_PQ
        if re.search(r",SQ8$", k):
            return Family.IVF_SQ8
        return Family.IVF_FLAT if re.search(r",FLAT$", k) else Family.CUSTOM
    if "HNSW" in k:
        return Family.HNSW
    if re.fullmatch(r"(IDMAP2?,)?FLAT", k):
        return Family.FLAT
    return Family.CUSTOM


def choose_index(n: int, dim: int, memory_bytes: int | None = None,
                 index_key: str | None = None) -> IndexChoice:
    """Pick the most accurate index that fits the memory budget (pure; see the test table).

    Flat up to FLAT_MAX_ROWS; HNSW32 while it fits; IVF-Flat; IVF with 8-bit scalar codes
    (4x smaller, recall barely changes); then OPQ+IVF-PQ with the largest code that fits.
    `index_key` (any faiss factory string) overrides the choice.
    """
    if n <= 0:
        raise ValueError(f"cannot build an index of {n} vectors")
    nlist = nlist_for(n)
    budget = math.inf if memory_bytes is None else memory_bytes
    if index_key:
        family = family_of(index_key)
        m = re.search(r"IVF(\d+)", index_key)
        pq = re.search(r"PQ(\d+)", index_key)
        lists = int(m.group(1)) if m else 0
        return IndexChoice(index_key, family, lists,
                           estimate_bytes(family, n, dim, lists, int(pq.group(1)) if pq else 0),
                           "--index-key override")
    flat = estimate_bytes(Family.FLAT, n, dim)
    if n <= FLAT_MAX_ROWS and flat <= budget:
        return IndexChoice("Flat", Family.FLAT, 0, flat,
                           f"{n} ≤ {FLAT_MAX_ROWS} vectors: exact search is fast enough")
    hnsw = estimate_bytes(Family.HNSW, n, dim)
    if n <= HNSW_MAX_ROWS and hnsw <= budget:
        return IndexChoice(f"HNSW{HNSW_M},Flat", Family.HNSW, 0, hnsw,
                           f"graph index fits the memory budget ({_gib(hnsw)} ≤ {_gib(budget)})")
    ivf = estimate_bytes(Family.IVF_FLAT, n, dim, nlist)
    why = (f"HNSW needs {_gib(hnsw)} > budget {_gib(budget)}" if n <= HNSW_MAX_ROWS
           else f"{n} > {HNSW_MAX_ROWS} vectors: HNSW32 misses the recall target")
    if ivf <= budget:
        return IndexChoice(f"IVF{nlist},Flat", Family.IVF_FLAT, nlist, ivf,
                           f"{why}; IVF-Flat fits ({_gib(ivf)})")
    sq8 = estimate_bytes(Family.IVF_SQ8, n, dim, nlist)
    if sq8 <= budget:
        return IndexChoice(f"IVF{nlist},SQ8", Family.IVF_SQ8, nlist, sq8,
                           f"{why}; IVF-Flat needs {_gib(ivf)}: 8-bit scalar codes fit "
                           f"({_gib(sq8)}, near-exact)")
    for m in pq_bytes_for(dim):
        pq = estimate_bytes(Family.IVF_PQ, n, dim, nlist, m)
        if pq <= budget:
            return IndexChoice(f"OPQ{m},IVF{nlist},PQ{m}", Family.IVF_PQ, nlist, pq,
                               f"{why}; 8-bit codes need {_gib(sq8)}: compressed to {m} "
                               f"bytes/vector ({_gib(pq)}, approximate: expect lower recall)")
    smallest = estimate_bytes(Family.IVF_PQ, n, dim, nlist, pq_bytes_for(dim)[-1])
    raise ValueError(f"memory budget {_gib(budget)} is too small for {n} vectors of dim {dim}: "
                     f"the most compact index ({pq_bytes_for(dim)[-1]}-byte PQ) needs about "
                     f"{_gib(smallest)}; raise --memory or use a smaller Matryoshka --dim")


def train_rows_for(choice: IndexChoice, n: int, dim: int) -> int:
    if choice.family in (Family.FLAT, Family.HNSW):
        return 0
    want = max(TRAIN_PER_LIST * choice.nlist, 39 * choice.nlist)
    if "PQ" in choice.key.upper():
        want = max(want, PQ_TRAIN_MIN)
    return min(n, max(want, 1000))


def _gib(b: float) -> str:
    return "unlimited" if b == math.inf else f"{b / 2**30:.2f} GiB"


# ---------------------------------------------------------------------------------------
# Sources of vectors


class VectorSource(Protocol):
    """Normalised vectors with their metadata, readable more than once, in row order."""

    rows: int
    dim: int
    id_type: str
    description: str

    def batches(self) -> Iterator[tuple[np.ndarray, pa.Table]]: ...

    def take(self, rows: np.ndarray) -> np.ndarray: ...


class ArraySource:
    """Vectors already in memory: float32 [n, dim] plus a metadata table with an `id`."""

    def __init__(self, vectors: np.ndarray, metadata: pa.Table, batch_rows: int = 65536,
                 description: str = "array"):
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

    def batches(self) -> Iterator[tuple[np.ndarray, pa.Table]]:
        for i in range(0, self.rows, self.batch_rows):
            yield self.vectors[i:i + self.batch_rows], self.metadata.slice(i, self.batch_rows)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.vectors[rows]


class NoteTexts:
    """Text of a notes file looked up by source line, read forward once alongside the
    embeddings (which record each row's `line`), so snippets need no second copy of the
    corpus in memory."""

    def __init__(self, path: str | Path, text_col: str | None = None,
                 id_col: str | None = None):
        from .readers import Reader

        self._batches = iter(Reader(path, text_col=text_col, id_col=id_col, keep=[],
                                    batch_size=4096))
        self._lines = np.zeros(0, np.int64)
        self._texts: list[str] = []

    def take(self, lines: np.ndarray) -> list[str | None]:
        """Texts (first SNIPPET_CHARS * 2 characters) of non-decreasing `lines`."""
        lines = np.asarray(lines, dtype=np.int64)
        if len(lines) == 0:
            return []
        while not len(self._lines) or self._lines[-1] < lines[-1]:
            batch = next(self._batches, None)
            if batch is None:
                break
            self._lines = np.concatenate([self._lines, batch.lines])
            self._texts += [t[: 2 * SNIPPET_CHARS] for t in batch.texts]
        pos = np.searchsorted(self._lines, lines).clip(0, max(len(self._lines) - 1, 0))
        found = (self._lines[pos] == lines) if len(self._lines) else np.zeros(len(lines), bool)
        out = [self._texts[p] if f else None for p, f in zip(pos, found)]
        drop = int(np.searchsorted(self._lines, lines[-1]))  # keep the last (windows share it)
        self._lines, self._texts = self._lines[drop:], self._texts[drop:]
        return out


class EmbeddingsSource:
    """An embeddings directory written by `mimicsearch encode`, streamed shard by shard;
    `notes` (the encoded file) supplies snippets."""

    def __init__(self, path: str | Path, notes: NoteTexts | None = None):
        from .embeddings import EmbeddingsManifest

        self.notes = notes
        self.path = Path(path)
        self.manifest = EmbeddingsManifest.load(path)
        if not self.manifest.complete:
            raise ValueError(f"{path} holds an unfinished `encode` run; re-run the same "
                             "command to finish it")
        self.rows, self.dim = self.manifest.rows, self.manifest.dim
        self.id_type = self.manifest.id_type
        self.description = f"embeddings:{self.path}"

    def batches(self) -> Iterator[tuple[np.ndarray, pa.Table]]:
        from .embeddings import iter_shards

        for table, mat in iter_shards(self.path):
            if self.notes is not None:
                lines = table.column("line").to_numpy()
                table = table.append_column("TEXT", pa.array(self.notes.take(lines), pa.string()))
            yield mat, table

    def take(self, rows: np.ndarray) -> np.ndarray:
        from .embeddings import iter_shards

        rows = np.sort(rows)
        out = np.empty((len(rows), self.dim), np.float32)
        start = 0
        for _, mat in iter_shards(self.path, columns=["id"]):
            lo, hi = np.searchsorted(rows, [start, start + len(mat)])
            out[lo:hi] = mat[rows[lo:hi] - start]
            start += len(mat)
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


# ---------------------------------------------------------------------------------------
# faiss helpers


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """faiss' on-disk code printf()s progress chatter to stdout; keep stdout clean for
    --json (its errors arrive as exceptions, not on stdout)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def _omp_threads(n: int | None) -> Iterator[None]:
    """A few queries gain nothing from OpenMP (faiss splits work by query), and on a busy
    machine its spinning threads turn 0.01 ms searches into 15 ms ones."""
    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def new_index(key: str, dim: int) -> faiss.Index:
    """An empty index from a factory key; non-IVF indexes are wrapped to take our ids."""
    try:
        index = faiss.index_factory(dim, key, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ValueError(f"faiss cannot build index key {key!r} for dim {dim}: "
                         f"{_faiss_message(e)}") from None
    if _ivf(index) is None and not key.upper().startswith("IDMAP"):
        index = faiss.index_factory(dim, "IDMap2," + key, faiss.METRIC_INNER_PRODUCT)
    return index


def _ivf(index: faiss.Index):
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _clone(index: faiss.Index) -> faiss.Index:
    return faiss.deserialize_index(faiss.serialize_index(index))


def _faiss_message(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else repr(e)


def _write_index(index: faiss.Index, index_dir: Path, prefix: str) -> FileRef:
    name = f"{prefix}-{uuid.uuid4().hex[:12]}.faiss"
    with atomic_path(index_dir / name) as tmp:
        faiss.write_index(index, str(tmp))
    return FileRef.of(index_dir, name)


def read_faiss(path: Path, flags: int = 0) -> faiss.Index:
    try:
        with _quiet_stdout():
            return faiss.read_index(str(path), flags)
    except RuntimeError as e:
        raise ValueError(f"{path} is not a readable faiss index ({_faiss_message(e)}); "
                         "rebuild the index with `build-index`") from None


def search_knob(index: faiss.Index) -> tuple[str, int] | None:
    """The speed/recall parameter of this index and its exhaustive value."""
    ivf = _ivf(index)
    if ivf is not None:
        return "nprobe", ivf.nlist
    try:
        faiss.ParameterSpace().set_index_parameter(index, "efSearch", 16)
        return "efSearch", max(EF_LADDER[-1], index.ntotal)
    except RuntimeError:
        return None


def _merge_topk(D: np.ndarray, I: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Global top-k (largest inner product) from per-shard results laid side by side."""
    D = np.where(I < 0, -np.inf, D).astype(np.float32)
    order = np.argsort(-D, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)


# ---------------------------------------------------------------------------------------
# A loaded index


class NoteIndex:
    """The shards of an index directory, searched together with a global top-k."""

    def __init__(self, index_dir: str | Path, manifest: IndexManifest,
                 shards: list[faiss.Index], store: MetadataStore):
        self.dir = Path(index_dir)
        self.manifest = manifest
        self.shards = shards
        self.store = store
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
        """Top-k (scores, rows) over all shards; rows -1 where fewer than k exist.

        `allowed` (bool per store row) restricts hits: small sets are searched exactly on
        reconstructed vectors, large ones by over-fetching and filtering.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)  # [nq, dim]
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if allowed is None:
            return self._search_all(q, k)
        allowed = np.asarray(allowed, dtype=bool)
        n_allowed = int(allowed.sum())
        if n_allowed == 0:
            return (np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1))
        if n_allowed <= EXACT_SUBSET_ROWS and self._can_reconstruct():
            return self._search_subset(q, k, np.flatnonzero(allowed))
        return self._search_filtered(q, k, allowed, n_allowed)

    def _search_all(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        Ds, Is = [], []
        with _omp_threads(1 if len(q) < FEW_QUERIES else None):
            for s in self.shards:
                if s.ntotal:
                    D, I = s.search(q, k)
                    Ds.append(D)
                    Is.append(I)
        if not Ds:
            return (np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1))
        D, I = _merge_topk(np.hstack(Ds), np.hstack(Is), k)
        return D, I

    def _search_filtered(self, q, k, allowed, n_allowed):
        ntotal = max(self.ntotal, 1)
        fetch = min(ntotal, max(2 * k, math.ceil(1.5 * k * ntotal / n_allowed)))
        while True:
            D, I = self._search_all(q, fetch)
            ok = (I >= 0) & allowed[np.clip(I, 0, None)]
            D = np.where(ok, D, -np.inf)
            D, I = _merge_topk(D, np.where(ok, I, -1), k)
            short = (I < 0).any(axis=1) if n_allowed >= k else np.zeros(len(q), bool)
            if not short.any() or fetch >= ntotal:
                break
            fetch = min(ntotal, fetch * 4)
        if short.any() and n_allowed <= SUBSET_FALLBACK_ROWS and self._can_reconstruct():
            # Approximate indexes only look at part of the data (nprobe lists, efSearch
            # nodes); when that part holds too few allowed rows, score the allowed rows.
            D2, I2 = self._search_subset(q[short], k, np.flatnonzero(allowed))
            D[short], I[short] = D2, I2
        return D, I

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
            index = self.shards[si]
            ivf = _ivf(index)
            if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
                ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
            try:
                out[sel] = index.reconstruct_batch(rows[sel])
            except RuntimeError as e:
                raise ValueError(f"cannot read stored vectors of rows {rows[sel][:5].tolist()} "
                                 f"({_faiss_message(e)})") from None
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


def open_index(index_dir: str | Path, verify: bool = True, mmap: bool = False) -> NoteIndex:
    """Load an index directory, checking every file against the manifest's sha256 first."""
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
    return NoteIndex(index_dir, manifest, shards, store)


def _is_ivf_key(manifest: IndexManifest) -> bool:
    return "IVF" in manifest.index_key.upper()


# ---------------------------------------------------------------------------------------
# Building


# Files the index directory's writers create; any that no manifest names is an orphan of a
# killed run (`.NAME.tmp.PID` are atomic_path's temporaries).
WRITTEN_FILES = ("trained-*.faiss", "shard-*.faiss", "merged-*.faiss", "merged-*.ivfdata",
                 "store/part-*.parquet", "store/deleted-*.parquet", ".*.tmp.*",
                 "store/.*.tmp.*")


def sweep_orphans(index_dir: Path, m: IndexManifest | None) -> list[str]:
    """Delete what a killed build/add/remove/merge wrote but no manifest names (never read,
    only disk space). Called under the writer lock, so no live writer owns such a file."""
    keep = {f.file for f in m.files()} if m is not None else set()
    removed = []
    for pattern in WRITTEN_FILES:
        for p in index_dir.glob(pattern):
            name = p.relative_to(index_dir).as_posix()
            if name not in keep and p.is_file():
                p.unlink()
                removed.append(name)
    return sorted(removed)


def index_writer(position: int):
    """Run the decorated function under the writer lock of its index directory argument."""
    def wrap(fn):
        @functools.wraps(fn)
        def locked(*args, **kwargs):
            with writer_lock(args[position]):
                return fn(*args, **kwargs)
        return locked
    return wrap


def check_build_args(out: Path, recall_target: float, shard_size: int | None) -> None:
    """Refuse a build before any work: shared by the local and the Spark engine."""
    if (out / MANIFEST).exists():
        raise FileExistsError(f"{out} already holds an index; use `mimicsearch add` to extend "
                              "it or choose another --out")
    if not 0 < recall_target <= 1:
        raise ValueError(f"recall target {recall_target} must be in (0, 1]")
    if shard_size is not None and shard_size <= 0:
        raise ValueError(f"shard size must be positive, got {shard_size}")


@index_writer(1)
def build_index(source: VectorSource, out_dir: str | Path, *, model_fingerprint: str,
                model_dir: str = "", memory_bytes: int | None = None,
                index_key: str | None = None, shard_size: int | None = None,
                merge: bool = False, recall_target: float = 0.95, seed: int = 0,
                eval_queries: int = EVAL_QUERIES, progress: bool = True) -> IndexManifest:
    """Build an index directory from `source`, then measure and tune its recall.

    IVF-type indexes are trained once on a sample; every shard is a copy of the trained
    empty index, so shards share their quantizer and can be merged on disk.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    check_build_args(out, recall_target, shard_size)
    sweep_orphans(out, None)  # no manifest: all of them are from a killed build
    n, dim = source.rows, source.dim
    choice = choose_index(n, dim, memory_bytes, index_key)
    rng = np.random.default_rng(seed)
    n_train = train_rows_for(choice, n, dim)
    n_eval = min(eval_queries, n)
    eval_rows = np.sort(rng.choice(n, n_eval, replace=False))
    train_rows = np.sort(rng.choice(n, n_train, replace=False)) if n_train else eval_rows[:0]
    sample = source.take(np.union1d(train_rows, eval_rows))
    both = np.union1d(train_rows, eval_rows)
    train = check_vectors(sample[np.searchsorted(both, train_rows)], dim, "training vectors")
    eval_q = check_vectors(sample[np.searchsorted(both, eval_rows)], dim, "vectors")

    trained = new_index(choice.key, dim)
    if not trained.is_trained:
        trained.train(train)
    out.mkdir(parents=True, exist_ok=True)
    trained_ref = _write_index(trained, out, "trained")

    exact = faiss.ResultHeap(n_eval, min(EVAL_K + 1, n), keep_max=True)
    shards: list[Shard] = []
    parts = []
    row = 0
    bar = tqdm(total=n, desc="indexing", unit="vec", disable=not progress, file=sys.stderr)
    current = None
    meta_batches: list[pa.Table] = []
    first = 0

    def close_shard():
        nonlocal current, meta_batches
        shards.append(Shard(_write_index(current, out, "shard"), current.ntotal, first, row))
        parts.append(write_part(out, pa.concat_tables(meta_batches)))
        current, meta_batches = None, []

    for vecs, meta in source.batches():
        vecs = check_vectors(vecs, dim)
        table = store_table(meta, row, source.id_type)
        exact.add_result(eval_q @ vecs.T, np.broadcast_to(
            np.arange(row, row + len(vecs), dtype=np.int64), (n_eval, len(vecs))))
        i = 0
        while i < len(vecs):
            if current is None:
                current, first = _clone(trained), row
            take = len(vecs) - i if shard_size is None else min(
                len(vecs) - i, shard_size - current.ntotal)
            current.add_with_ids(vecs[i:i + take],
                                 np.arange(row, row + take, dtype=np.int64))
            meta_batches.append(table.slice(i, take))
            i += take
            row += take
            bar.update(take)
            if shard_size is not None and current.ntotal >= shard_size:
                close_shard()
    if current is not None:
        close_shard()
    bar.close()
    if row != n:
        raise ValueError(f"{source.description} announced {n} rows but yielded {row}")
    exact.finalize()

    build = BuildParams(choice.key, choice.family, choice.reason, memory_bytes,
                        choice.estimated_bytes, shard_size, choice.nlist, n_train, seed,
                        source.description)
    manifest = IndexManifest(
        model_fingerprint=model_fingerprint, model_dir=str(model_dir), dimension=dim,
        index_key=choice.key, family=choice.family, trained=trained_ref,
        shards=tuple(shards), store_parts=tuple(parts), rows=n, build=build,
        id_type=source.id_type)
    manifest.save(out)
    if merge:
        manifest = merge_shards(out)
    index = open_index(out, verify=False)
    quality = measure_quality(index, eval_q, eval_rows, exact.I, recall_target)
    build = dataclasses.replace(build, seconds=round(time.perf_counter() - t0, 3))
    manifest = manifest.with_(quality=quality, search_params=quality.search_params, build=build)
    manifest.save(out)
    return manifest


def measure_quality(index: NoteIndex, queries: np.ndarray, query_rows: np.ndarray,
                    exact: np.ndarray, recall_target: float, k: int = EVAL_K) -> Quality:
    """Recall@k against exact neighbours, for each setting of the search knob; keep the
    cheapest setting reaching the target (the query's own row is not counted)."""
    k = min(k, max(1, index.ntotal - 1))
    if index.knob is None:
        settings = [{}]
    else:
        name, top = index.knob
        ladder = NPROBE_LADDER if name == "nprobe" else EF_LADDER
        if name == "efSearch":
            top = EF_LADDER[-1]  # beyond this HNSW is slower than exact search
        settings = [{name: v} for v in ladder if v < top] + [{name: top}]
    truth = [_without(e, r, k) for e, r in zip(exact, query_rows)]
    curve, chosen = [], None
    for params in settings:
        index.set_search_params(params)
        _, I = index.search(queries, k + 1)
        per_query = [len(set(_without(a, r, k)) & set(t)) / len(t)
                     for a, r, t in zip(I, query_rows, truth) if t]
        recall = float(np.mean(per_query)) if per_query else 1.0  # one vector: nothing to miss
        curve.append({**params, "recall": round(recall, 4)})
        if recall >= recall_target:
            chosen = (params, recall)
            break
    if chosen is None:
        best = max(curve, key=lambda c: c["recall"])
        chosen = ({name: v for name, v in best.items() if name != "recall"}, best["recall"])
    params, recall = chosen
    index.set_search_params(params)
    times = []
    for q in queries[: min(len(queries), 100)]:
        t = time.perf_counter()
        index.search(q[None], k)
        times.append(time.perf_counter() - t)
    return Quality(round(recall, 4), recall_target, recall >= recall_target, len(queries), k,
                   round(1000 * float(np.median(times)), 4), params, tuple(curve),
                   index.ntotal)


def _without(rows: np.ndarray, row: int, k: int) -> list[int]:
    return [int(r) for r in rows if r != row and r >= 0][:k]


@index_writer(0)
def merge_shards(index_dir: str | Path) -> IndexManifest:
    """Merge all IVF shards into one on-disk index whose lists are memory-mapped."""
    index_dir = Path(index_dir)
    m = IndexManifest.load(index_dir)
    sweep_orphans(index_dir, m)
    trained_path = m.trained.verify(index_dir)
    trained = read_faiss(trained_path)
    if _ivf(trained) is None:
        raise ValueError(f"only IVF indexes can be merged on disk; this one is "
                         f"{m.index_key!r} (build with an IVF --index-key to merge)")
    from faiss.contrib.ondisk import merge_ondisk

    paths = [str(s.index.verify(index_dir)) for s in m.shards]
    tag = uuid.uuid4().hex[:12]
    data_name, index_name = f"merged-{tag}.ivfdata", f"merged-{tag}.faiss"
    with _quiet_stdout():
        merge_ondisk(trained, paths, str(index_dir / data_name))
        with atomic_path(index_dir / index_name) as tmp:
            faiss.write_index(trained, str(tmp))
    shard = Shard(FileRef.of(index_dir, index_name), int(trained.ntotal),
                  m.shards[0].first_row if m.shards else 0,
                  m.shards[-1].end_row if m.shards else 0, FileRef.of(index_dir, data_name))
    new = m.with_(shards=(shard,))
    new.save(index_dir)
    _unlink_replaced(index_dir, m, new)
    return new


def _unlink_replaced(index_dir: Path, old: IndexManifest, new: IndexManifest) -> None:
    keep = {f.file for f in new.files()}
    for f in old.files():
        if f.file not in keep:
            (index_dir / f.file).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------
# Incremental changes


@index_writer(0)
def add_to_index(index_dir: str | Path, vectors: np.ndarray, metadata: pa.Table) -> IndexManifest:
    """Append rows without retraining: they fill the last shard up to the shard size, then
    go to new shards cloned from the trained index. Note ids must be new."""
    index_dir = Path(index_dir)
    m = IndexManifest.load(index_dir)
    sweep_orphans(index_dir, m)
    vectors = check_vectors(vectors, m.dimension)
    store = MetadataStore.load(index_dir, m)
    table = store_table(metadata, m.rows, m.id_type)
    ids = table.column("id").to_pylist()
    present, _ = store.rows_of(list(dict.fromkeys(ids)))
    if len(present):
        dup = store.records(present[:5])
        raise ValueError(f"{len(present)} rows have ids already in the index (e.g. "
                         f"{[d['id'] for d in dup]}); remove them first or use new ids")
    if len(vectors) != table.num_rows:
        raise ValueError(f"{len(vectors)} vectors but {table.num_rows} metadata rows")
    cap = m.build.shard_size
    shards = list(m.shards)
    row, i = m.rows, 0
    trained = None
    while i < len(vectors):
        last = shards[-1] if shards else None
        if last is not None and not last.merged and (cap is None or last.ntotal < cap):
            index = read_faiss(last.index.verify(index_dir))
            shards.pop()
            first = last.first_row
        else:
            trained = trained or read_faiss(m.trained.verify(index_dir))
            index, first = _clone(trained), row
        take = len(vectors) - i if cap is None else min(len(vectors) - i, cap - index.ntotal)
        index.add_with_ids(vectors[i:i + take], np.arange(row, row + take, dtype=np.int64))
        i += take
        row += take
        shards.append(Shard(_write_index(index, index_dir, "shard"), int(index.ntotal),
                            first, row))
    part = write_part(index_dir, table)
    new = m.with_(shards=tuple(shards), store_parts=m.store_parts + (part,), rows=row)
    new.validate()
    new.save(index_dir)
    _unlink_replaced(index_dir, m, new)
    return new


@dataclass(frozen=True)
class RemoveResult:
    removed_rows: int
    native: int
    tombstoned: int
    manifest: IndexManifest


@index_writer(0)
def remove_from_index(index_dir: str | Path, ids: Sequence) -> RemoveResult:
    """Delete notes by id: natively from shards that support it (Flat, IVF), as tombstones
    elsewhere (HNSW, merged on-disk shards); the store marks every removed row."""
    index_dir = Path(index_dir)
    m = IndexManifest.load(index_dir)
    sweep_orphans(index_dir, m)
    store = MetadataStore.load(index_dir, m)
    rows, missing = store.rows_of(ids)
    if missing:
        raise ValueError(f"{len(missing)} ids are not in the index (or already removed): "
                         f"{missing[:10]}")
    shards, native = [], 0
    for s in m.shards:
        mine = rows[(rows >= s.first_row) & (rows < s.end_row)]
        if len(mine) == 0 or s.merged:
            shards.append(s)
            continue
        index = read_faiss(s.index.verify(index_dir))
        try:
            n = index.remove_ids(np.ascontiguousarray(mine, dtype=np.int64))
        except RuntimeError:
            shards.append(s)  # no native removal (HNSW): tombstones only
            continue
        native += int(n)
        shards.append(Shard(_write_index(index, index_dir, "shard"), int(index.ntotal),
                            s.first_row, s.end_row))
    deleted = np.union1d(np.flatnonzero(~store.live), rows)
    new = m.with_(shards=tuple(shards), deleted=write_deleted(index_dir, deleted),
                  deleted_rows=len(deleted), removed_natively=m.removed_natively + native)
    new.validate()
    new.save(index_dir)
    _unlink_replaced(index_dir, m, new)
    return RemoveResult(len(rows), native, len(rows) - native, new)


# ---------------------------------------------------------------------------------------
# Describing


def index_info(index_dir: str | Path) -> dict:
    """What the index is, how it was built, its measured quality and size (no hashing)."""
    index_dir = Path(index_dir)
    m = IndexManifest.load(index_dir)
    disk = sum(f.size_bytes for f in m.files())
    q = m.quality
    return {
        "path": str(index_dir),
        "index_key": m.index_key,
        "family": m.family.value,
        "dimension": m.dimension,
        "metric": m.metric,
        "model_fingerprint": m.model_fingerprint,
        "model_dir": m.model_dir,
        "rows": m.rows,
        "live_rows": m.live_rows,
        "removed_natively": m.removed_natively,
        "tombstones": m.deleted_rows - m.removed_natively,
        "vectors_in_faiss": m.ntotal,
        "shards": [{"file": s.index.file, "ntotal": s.ntotal, "rows": [s.first_row, s.end_row],
                    "merged_on_disk": s.merged,
                    "bytes": s.index.size_bytes + (s.data.size_bytes if s.data else 0)}
                   for s in m.shards],
        "disk_bytes": disk,
        "search_params": m.search_params,
        "quality": q.to_dict() if q else None,
        "build": m.build.to_dict(),
        "has_embeddings": (index_dir / "embeddings" / "manifest.json").is_file(),
    }


# ---------------------------------------------------------------------------------------
# From notes or an embeddings directory


def is_embeddings_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "manifest.json").is_file()


def _model_fingerprint(model_dir: str | Path) -> str:
    from .manifest import ModelManifest

    return ModelManifest.load(model_dir).fingerprint


def _source_notes(embeddings_dir: Path) -> NoteTexts | None:
    """The notes file an embeddings directory was encoded from, for snippets, if it is still
    there unchanged (same size and mtime as `encode` recorded); else no snippets."""
    from .embeddings import EmbeddingsManifest

    st = EmbeddingsManifest.load(embeddings_dir).settings
    path = Path(st.get("input", ""))
    if not st.get("input") or not path.is_file():
        return None
    stat = path.stat()
    if (stat.st_size, stat.st_mtime_ns) != (st.get("input_bytes"), st.get("input_mtime_ns")):
        return None
    return NoteTexts(path, st.get("text_col"), st.get("id_col"))


def open_input(input_path: str | Path, model_dir: str | Path | None, embeddings_dir: Path, *,
               text_col: str | None = None, id_col: str | None = None, dim: int | None = None,
               long: str = "truncate", threads: int | None = None,
               progress: bool = True) -> tuple[EmbeddingsSource, str]:
    """(source, model fingerprint) for notes (encoded into `embeddings_dir` first) or for an
    existing embeddings directory (checked against `model_dir` when one is given)."""
    input_path = Path(input_path)
    if input_path.is_dir():
        if not is_embeddings_dir(input_path):
            raise ValueError(f"{input_path} is a directory without manifest.json: pass a notes "
                             "file or an embeddings directory written by `mimicsearch encode`")
        source = EmbeddingsSource(input_path, _source_notes(input_path))
        fingerprint = source.manifest.model_fingerprint
        if model_dir is not None and _model_fingerprint(model_dir) != fingerprint:
            raise ValueError(f"{input_path} was encoded by model {fingerprint}, not by "
                             f"{model_dir} ({_model_fingerprint(model_dir)})")
        return source, fingerprint
    if model_dir is None:
        raise ValueError(f"{input_path} holds notes: pass --model to encode them")
    from .encode import encode_corpus

    encode_corpus(input_path, model_dir, embeddings_dir, text_col=text_col, id_col=id_col,
                  dim=dim, long=long, threads=threads, progress=progress)
    return (EmbeddingsSource(embeddings_dir, NoteTexts(input_path, text_col, id_col)),
            _model_fingerprint(model_dir))


@index_writer(1)
def build_index_from(input_path: str | Path, out_dir: str | Path,
                     model_dir: str | Path | None = None, *, text_col: str | None = None,
                     id_col: str | None = None, dim: int | None = None,
                     long: str = "truncate", threads: int | None = None,
                     progress: bool = True, **build: object) -> IndexManifest:
    """`build-index`: encode notes into OUT/embeddings (or take an embeddings directory),
    then build_index() over them. Keyword arguments in `build` go to build_index()."""
    out = Path(out_dir)
    if (out / MANIFEST).exists():
        if IndexManifest.load(out).quality is not None:
            raise FileExistsError(f"{out} already holds an index; use `mimicsearch add` to "
                                  "extend it or choose another --out")
        (out / MANIFEST).unlink()  # a build killed before its tuning step: build it again
    source, fingerprint = open_input(input_path, model_dir, out / "embeddings",
                                     text_col=text_col, id_col=id_col, dim=dim, long=long,
                                     threads=threads, progress=progress)
    return build_index(source, out, model_fingerprint=fingerprint,
                       model_dir=str(Path(model_dir).resolve()) if model_dir else "",
                       progress=progress, **build)


@index_writer(0)
def add_notes(index_dir: str | Path, input_path: str | Path,
              model_dir: str | Path | None = None, *, text_col: str | None = None,
              id_col: str | None = None, threads: int | None = None,
              progress: bool = True) -> IndexManifest:
    """`add`: encode new notes with the index's model (or take embeddings) and append them."""
    index_dir = Path(index_dir)
    m = IndexManifest.load(index_dir)
    model_dir = model_dir or m.model_dir or None
    for stale in index_dir.glob(".adding-*"):  # from a killed add; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    tmp = index_dir / f".adding-{uuid.uuid4().hex[:12]}"
    try:
        dim = None
        if not Path(input_path).is_dir() and model_dir is not None:
            from .manifest import ModelManifest

            full = ModelManifest.load(model_dir).dimension
            dim = None if m.dimension == full else m.dimension
        # Window rows in the store mean the index was built with --long windows.
        store = MetadataStore.load(index_dir, m, verify=False)
        long = "windows" if "window" in store.table.column_names else "truncate"
        # Embeddings are checked against the index's fingerprint; no model needed.
        encode_with = None if Path(input_path).is_dir() else model_dir
        source, fingerprint = open_input(input_path, encode_with, tmp, text_col=text_col,
                                         id_col=id_col, dim=dim, long=long, threads=threads,
                                         progress=progress)
        check_model(m, fingerprint, input_path if encode_with is None else model_dir)
        vecs, tables = [], []
        for v, t in source.batches():
            vecs.append(v)
            tables.append(t)
        if not vecs:
            raise ValueError(f"{input_path} holds no notes to add")
        return add_to_index(index_dir, np.concatenate(vecs), pa.concat_tables(tables))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
