"""faiss helpers every index module shares: create, read, write, clone, search knobs."""
from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

from ..fileio import atomic_path
from .manifest import FileRef

EF_MAX = 2048  # HNSW efSearch beyond which exact search is faster


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
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
def omp_threads(n: int | None) -> Iterator[None]:
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
                         f"{faiss_message(e)}") from None
    if ivf_of(index) is None and not key.upper().startswith("IDMAP"):
        index = faiss.index_factory(dim, "IDMap2," + key, faiss.METRIC_INNER_PRODUCT)
    return index


def ivf_of(index: faiss.Index):
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def clone(index: faiss.Index) -> faiss.Index:
    return faiss.deserialize_index(faiss.serialize_index(index))


def faiss_message(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else repr(e)


def write_index(index: faiss.Index, index_dir: Path, prefix: str) -> FileRef:
    name = f"{prefix}-{uuid.uuid4().hex[:12]}.faiss"
    with atomic_path(index_dir / name, new=True) as tmp:
        try:
            faiss.write_index(index, str(tmp))
        except RuntimeError as e:  # read-only directory, disk full, file-size limit
            raise OSError(f"cannot write {index_dir / name}: {faiss_message(e)}") from None
    return FileRef.of(index_dir, name)


def read_faiss(path: Path, flags: int = 0) -> faiss.Index:
    try:
        with quiet_stdout():
            return faiss.read_index(str(path), flags)
    except RuntimeError as e:
        raise ValueError(f"{path} is not a readable faiss index ({faiss_message(e)}); "
                         "rebuild the index with `build-index`") from None


def search_knob(index: faiss.Index) -> tuple[str, int] | None:
    """The speed/recall parameter of this index and its exhaustive value."""
    ivf = ivf_of(index)
    if ivf is not None:
        return "nprobe", ivf.nlist
    try:
        faiss.ParameterSpace().set_index_parameter(index, "efSearch", 16)
        return "efSearch", max(EF_MAX, index.ntotal)
    except RuntimeError:
        return None


def selector_params(index: faiss.Index, selector: faiss.IDSelector) -> faiss.SearchParameters:
    """Search parameters restricting `index` to `selector`'s ids, carrying the index's own
    nprobe / efSearch (faiss's defaults in a parameter object would replace them)."""
    ivf = ivf_of(index)
    if ivf is not None:
        params = faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nprobe)
        if isinstance(index, faiss.IndexPreTransform):
            params = faiss.SearchParametersPreTransform(index_params=params)
            params.sel = selector
        return params
    inner = faiss.downcast_index(index.index) if isinstance(
        index, (faiss.IndexIDMap, faiss.IndexIDMap2)) else index
    if isinstance(inner, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=inner.hnsw.efSearch)
    return faiss.SearchParameters(sel=selector)


def merge_topk(D: np.ndarray, I: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Global top-k (largest inner product) from per-shard results laid side by side."""
    D = np.where(I < 0, -np.inf, D).astype(np.float32)
    order = np.argsort(-D, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)



def stored_vectors(index: faiss.Index, rows: np.ndarray) -> np.ndarray:
    """The stored vectors of faiss ids `rows` (decoded where compressed); IVF indexes get
    the id lookup table reconstruction needs."""
    ivf = ivf_of(index)
    if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    try:
        return index.reconstruct_batch(np.ascontiguousarray(rows, dtype=np.int64))
    except RuntimeError as e:
        raise ValueError(f"cannot read stored vectors of rows {list(rows[:5])} "
                         f"({faiss_message(e)})") from None
