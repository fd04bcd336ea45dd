"""Changing a built index in place: add, remove, merge on disk, sweep orphans, describe.

Every change writes new files, then the manifest, then unlinks what the old manifest named,
all under the directory's writer lock.
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from ..fileio import MANIFEST, atomic_path, writer
from .faiss_ops import clone, ivf_of, quiet_stdout, read_faiss, write_index
from .manifest import FileRef, IndexManifest, IndexShard
from .sources import check_vectors
from .store import MetadataStore, store_table, write_deleted, write_part

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



@writer("index_dir")
def merge_shards(index_dir: str | Path) -> IndexManifest:
    """Merge all IVF shards into one on-disk index whose lists are memory-mapped."""
    index_dir = Path(index_dir)
    m = IndexManifest.load(index_dir)
    sweep_orphans(index_dir, m)
    trained_path = m.trained.verify(index_dir)
    trained = read_faiss(trained_path)
    if ivf_of(trained) is None:
        raise ValueError(f"only IVF indexes can be merged on disk; this one is "
                         f"{m.index_key!r} (build with an IVF --index-key to merge)")
    from faiss.contrib.ondisk import merge_ondisk

    paths = [str(s.index.verify(index_dir)) for s in m.shards]
    tag = uuid.uuid4().hex[:12]
    data_name, index_name = f"merged-{tag}.ivfdata", f"merged-{tag}.faiss"
    with quiet_stdout():
        merge_ondisk(trained, paths, str(index_dir / data_name))
        with atomic_path(index_dir / index_name) as tmp:
            faiss.write_index(trained, str(tmp))
    shard = IndexShard(FileRef.of(index_dir, index_name), int(trained.ntotal),
                  m.shards[0].first_row if m.shards else 0,
                  m.shards[-1].end_row if m.shards else 0, FileRef.of(index_dir, data_name))
    new = m.with_(shards=(shard,))
    new.save(index_dir)
    unlink_replaced(index_dir, m, new)
    return new


def unlink_replaced(index_dir: Path, old: IndexManifest, new: IndexManifest) -> None:
    keep = {f.file for f in new.files()}
    for f in old.files():
        if f.file not in keep:
            (index_dir / f.file).unlink(missing_ok=True)



@writer("index_dir")
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
            index, first = clone(trained), row
        take = len(vectors) - i if cap is None else min(len(vectors) - i, cap - index.ntotal)
        index.add_with_ids(vectors[i:i + take], np.arange(row, row + take, dtype=np.int64))
        i += take
        row += take
        shards.append(IndexShard(write_index(index, index_dir, "shard"), int(index.ntotal),
                            first, row))
    part = write_part(index_dir, table)
    new = m.with_(shards=tuple(shards), store_parts=m.store_parts + (part,), rows=row)
    new.validate()
    new.save(index_dir)
    unlink_replaced(index_dir, m, new)
    return new


@dataclass(frozen=True)
class RemoveResult:
    removed_rows: int
    native: int
    tombstoned: int
    manifest: IndexManifest


@writer("index_dir")
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
        shards.append(IndexShard(write_index(index, index_dir, "shard"), int(index.ntotal),
                            s.first_row, s.end_row))
    deleted = np.union1d(np.flatnonzero(~store.live), rows)
    new = m.with_(shards=tuple(shards), deleted=write_deleted(index_dir, deleted),
                  deleted_rows=len(deleted), removed_natively=m.removed_natively + native)
    new.validate()
    new.save(index_dir)
    unlink_replaced(index_dir, m, new)
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
        "has_embeddings": (index_dir / "embeddings" / MANIFEST).is_file(),
    }

