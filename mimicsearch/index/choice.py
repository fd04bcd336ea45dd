"""Which faiss index a corpus gets: the most accurate one that fits the memory budget."""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from .manifest import Family

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

