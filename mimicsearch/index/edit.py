"""Changing a built index in place: add, remove, merge on disk, sweep orphans, describe.

Every change writes new files, then the manifest, then unlinks what the old manifest named,
all under the directory's writer lock.
"""
from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from ..fileio import MANIFEST, atomic_path, mark_new, writer
from .commit import commit, sweep_orphans
from .faiss_ops import (
    clone,
    faiss_message,
    ivf_of,
    quiet_stdout,
    read_faiss,
    stored_vectors,
    write_index,
)
from .lexical import SegmentWriter
from .lexical.merge import merge_segments
from .lexical.policy import merges
from .manifest import FileRef, IndexManifest, IndexShard
from .pooled import PatientSums
from .sources import check_vectors
from .store import FULL_TEXT, MetadataStore, document_rows, store_table, write_deleted, write_part


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
        merge_ondisk(trained, paths, str(mark_new(index_dir / data_name)))
        with atomic_path(index_dir / index_name, new=True) as tmp:
            try:
                faiss.write_index(trained, str(tmp))
            except RuntimeError as e:
                raise OSError(f"cannot write {index_dir / index_name}: {faiss_message(e)}"
                              ) from None
    shard = IndexShard(FileRef.of(index_dir, index_name), int(trained.ntotal),
                  m.shards[0].first_row if m.shards else 0,
                  m.shards[-1].end_row if m.shards else 0, FileRef.of(index_dir, data_name))
    return commit(index_dir, m, m.with_(shards=(shard,)))


MISSING = ("error", "ignore")
# A commit rewrites a shard only up to this many vectors: past it, removals are tombstones
# (filtered at query time) and new rows start a new shard, so a nightly sync into a
# 2M-row index reads and writes megabytes, not the whole index.
REWRITE_ROWS = 250_000


@dataclass(frozen=True)
class ChangeResult:
    """What one commit to an index did. Rows count vectors (windows), notes count ids."""

    added_notes: int
    added_rows: int
    removed_notes: int
    removed_rows: int
    native: int  # removed rows deleted from faiss itself
    tombstoned: int  # removed rows only marked deleted (HNSW, merged on-disk shards)
    missing: tuple  # ids asked to be removed that the index did not hold
    live_notes: int  # notes the index holds after the commit
    manifest: IndexManifest

    def to_dict(self) -> dict:
        return {"added_notes": self.added_notes, "added_rows": self.added_rows,
                "removed_notes": self.removed_notes, "removed_rows": self.removed_rows,
                "removed_natively": self.native, "tombstones": self.tombstoned,
                "missing_ids": list(self.missing), "live_notes": self.live_notes,
                "live_rows": self.manifest.live_rows,
                "rows": self.manifest.rows, "shards": len(self.manifest.shards)}


@writer("index_dir")
def apply_changes(*, index_dir: str | Path, vectors: np.ndarray | None = None,
                  metadata: pa.Table | None = None, remove_ids: Sequence = (),
                  missing: str = "error") -> ChangeResult:
    """Remove `remove_ids` and append `vectors` with their `metadata`, as one commit: one
    manifest write, so a reader sees the index before or after, never an edited note
    missing. Appended ids must not be live unless removed here (an edit).

    Removal is native where faiss supports it (Flat, IVF) in shards of at most
    REWRITE_ROWS vectors, tombstones elsewhere (HNSW, merged on-disk shards, larger
    shards). New rows fill the last shard up to the shard size (REWRITE_ROWS where the
    build set none), then go to new shards cloned from the trained index: nothing is
    retrained.
    `missing`: "error" refuses ids the index does not hold; "ignore" skips them (a re-run).
    Raises ValueError on a bad argument, leaving the index unchanged.
    """
    if missing not in MISSING:
        raise ValueError(f"missing={missing!r}; valid: {list(MISSING)}")
    if isinstance(remove_ids, (str, bytes)):
        raise TypeError(f"remove_ids={remove_ids!r}: give a list of ids")
    index_dir = Path(index_dir)
    m = IndexManifest.load(index_dir)
    check_finished(m, index_dir)
    sweep_orphans(index_dir, m)
    store = MetadataStore.load(index_dir, m, columns=())
    wanted = list(dict.fromkeys(store.parse_ids(remove_ids)))
    rows, absent = store.rows_of(wanted)
    if absent and missing == "error":
        raise ValueError(f"{len(absent)} ids are not in the index (or already removed): "
                         f"{absent[:10]} (pass missing='ignore' / --missing ignore to skip "
                         "them)")
    table = None
    if vectors is not None or metadata is not None:
        if vectors is None or metadata is None:
            raise ValueError("pass both vectors and metadata to add rows")
        vectors = check_vectors(vectors, m.dimension)
        table = store_table(metadata, m.rows, m.id_type)
        if len(vectors) != table.num_rows:
            raise ValueError(f"{len(vectors)} vectors but {table.num_rows} metadata rows")
        new_ids = list(dict.fromkeys(table.column("id").to_pylist()))
        present, _ = store.rows_of(new_ids)
        present = np.setdiff1d(present, rows)
        if len(present):
            dup = store.records(present[:5])
            raise ValueError(f"{len(present)} rows have ids already in the index (e.g. "
                             f"{[d['id'] for d in dup]}); remove them first, use new ids, or "
                             "`sync` to replace edited notes")
    shards: list[IndexShard] = list(m.shards)
    loaded: dict[int, faiss.Index] = {}  # shard position -> changed faiss index
    native = 0
    gone = []  # the removed rows' vectors, read before faiss forgets them
    for si, sh in enumerate(shards):
        mine = rows[(rows >= sh.first_row) & (rows < sh.end_row)]
        if len(mine) == 0:
            continue
        if sh.merged or sh.ntotal > REWRITE_ROWS:  # tombstones only: not rewritten
            if m.patients is not None:
                flag = (faiss.IO_FLAG_ONDISK_SAME_DIR if sh.merged else
                        faiss.IO_FLAG_MMAP if "IVF" in m.index_key.upper() else 0)
                index = read_faiss(sh.index.verify(index_dir), flag)
                gone.append(stored_vectors(index, mine))
            continue
        index = read_faiss(sh.index.verify(index_dir))
        if m.patients is not None:
            gone.append(stored_vectors(index, mine))
            if (ivf := ivf_of(index)) is not None:
                ivf.set_direct_map_type(faiss.DirectMap.NoMap)  # the file stays as built
        try:
            n = index.remove_ids(np.ascontiguousarray(mine, dtype=np.int64))
        except RuntimeError:
            continue  # no native removal (HNSW): tombstones only
        native += int(n)
        loaded[si] = index
    row = m.rows
    if table is not None and len(vectors):
        cap, i, trained = m.build.shard_size or REWRITE_ROWS, 0, None
        while i < len(vectors):
            last = len(shards) - 1
            if last >= 0 and not shards[last].merged and _ntotal(loaded, shards, last) < cap:
                if last not in loaded:
                    loaded[last] = read_faiss(shards[last].index.verify(index_dir))
                index = loaded[last]
            else:
                trained = trained or read_faiss(m.trained.verify(index_dir))
                index = clone(trained)
                shards.append(IndexShard(m.trained, 0, row, row))
                last += 1
                loaded[last] = index
            take = len(vectors) - i if cap is None else min(len(vectors) - i,
                                                            cap - index.ntotal)
            index.add_with_ids(vectors[i:i + take], np.arange(row, row + take, dtype=np.int64))
            i += take
            row += take
            shards[last] = IndexShard(shards[last].index, int(index.ntotal),
                                      shards[last].first_row, row)
    for si, index in loaded.items():
        sh = shards[si]
        shards[si] = IndexShard(write_index(index, index_dir, "shard"), int(index.ntotal),
                                sh.first_row, sh.end_row)
    changes: dict = {"shards": tuple(shards), "rows": row,
                     "removed_natively": m.removed_natively + native}
    if table is not None:
        changes["store_parts"] = m.store_parts + (write_part(index_dir, table),)
    if len(rows):
        deleted = np.union1d(np.flatnonzero(~store.live), rows)
        changes.update(deleted=write_deleted(index_dir, deleted), deleted_rows=len(deleted))
    removed_notes = len(set(wanted) - set(absent))
    added = 0 if table is None else len(set(table.column("id").to_pylist()))
    if m.calibration is not None and removed_notes + added:  # how stale it grows
        changes["calibration"] = dataclasses.replace(
            m.calibration, changed=m.calibration.changed + removed_notes + added)
    new = m.with_(**changes)
    if m.patients is not None and (len(rows) or table is not None):
        new = new.with_(patients=_patients_for(index_dir, m, new, table, vectors, rows, gone))
    if m.lexical is not None and table is not None and len(vectors):
        segments = _segments_for(index_dir, table, m.rows)
        new = new.with_(lexical=dataclasses.replace(
            m.lexical, segments=m.lexical.segments + tuple(segments)))
    new.validate()
    if new != m:
        new = commit(index_dir, m, new)
    if new.lexical is not None:  # also on a no-op re-run of a commit killed before it
        live = np.concatenate([store.live, np.ones(new.rows - m.rows, bool)])
        live[rows] = False
        new, _ = merge_segments(index_dir, new, live, merges)
    return ChangeResult(added, 0 if table is None else table.num_rows, removed_notes,
                        len(rows), native, len(rows) - native, tuple(absent),
                        len(store.ids()) - removed_notes + added, new)


def _patients_for(index_dir: Path, m: IndexManifest, new: IndexManifest, table, vectors,
                  removed: np.ndarray, gone: list) -> FileRef:
    """The patients' vector sums after a commit: the added rows' vectors in, the removed
    rows' out, keyed by the new state's typed patient column."""
    column = MetadataStore.schema_of(index_dir, new).subject
    subject = MetadataStore.load(index_dir, new, verify=False,
                                 columns=[column]).table.column(column)
    sums = PatientSums.read(index_dir, m.patients, m.dimension)
    if len(removed):
        sums = sums.combine(PatientSums.of(subject.take(pa.array(removed)), removed,
                                           np.concatenate(gone), sign=-1), subject)
    if table is not None and len(vectors):
        added = np.arange(m.rows, m.rows + table.num_rows, dtype=np.int64)
        sums = sums.combine(PatientSums.of(subject.take(pa.array(added)), added, vectors),
                            subject)
    return sums.write(index_dir)


def _segments_for(index_dir: Path, table: pa.Table, first_row: int) -> list:
    """The added notes' lexical segments; refused (nothing committed) when a note comes
    without its text, since BM25 could not find it."""
    writer = SegmentWriter(index_dir, first_row)
    rows = document_rows(table)
    texts = (table.column(FULL_TEXT).take(pa.array(rows)).to_pylist()
             if FULL_TEXT in table.column_names else [None] * len(rows))
    writer.add(texts, rows + first_row)
    segments = writer.finish(first_row + table.num_rows)
    if segments is None:
        raise ValueError("this index also scores notes by BM25 over their whole text, and "
                         "the new notes come without it: add them from a notes file, or "
                         "from an embeddings directory encoded with --full-text")
    return segments


UNFINISHED = ("build-index was interrupted before it tuned and measured this index; re-run "
              "the same build-index command to finish it")


def check_finished(m: IndexManifest, index_dir: Path) -> None:
    """Refuse to change an index whose build was killed before tuning: re-running that
    build (the documented recovery) would silently undo the change."""
    if m.quality is None:
        raise ValueError(f"{index_dir}: {UNFINISHED} (a change made now would be lost when "
                         "it does)")


def _ntotal(loaded: dict, shards: list, i: int) -> int:
    return int(loaded[i].ntotal) if i in loaded else shards[i].ntotal


def add_to_index(vectors: np.ndarray, metadata: pa.Table, *,
                 index_dir: str | Path) -> IndexManifest:
    """Append rows (`vectors` float32 [n, dim], `metadata` with an `id` column) without
    retraining; their ids must be new. The new manifest."""
    return apply_changes(index_dir=index_dir, vectors=vectors, metadata=metadata).manifest


def remove_from_index(ids: Sequence, *, index_dir: str | Path,
                      missing: str = "error") -> ChangeResult:
    """Delete notes (every window) by id; the store marks every removed row."""
    return apply_changes(index_dir=index_dir, remove_ids=ids, missing=missing)


# ---------------------------------------------------------------------------------------
# Describing


def index_info(index_dir: str | Path) -> dict:
    """What the index is, how it was built, its measured quality and size (no hashing)."""
    index_dir = Path(index_dir)
    m = IndexManifest.load(index_dir)
    store = MetadataStore.load(index_dir, m, verify=False)
    disk = sum(f.size_bytes for f in m.files())
    q = m.quality
    return {
        "index_dir": str(index_dir),
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
        "shards": len(m.shards),
        "shard_files": [{"file": s.index.file, "ntotal": s.ntotal, "rows": [s.first_row, s.end_row],
                    "merged_on_disk": s.merged,
                    "bytes": s.index.size_bytes + (s.data.size_bytes if s.data else 0)}
                   for s in m.shards],
        "disk_bytes": disk,
        "search_params": m.search_params,
        "quality": q.to_dict() if q else None,
        "calibration": m.calibration.to_dict() if m.calibration else None,
        "diagnoses": m.diagnoses is not None,
        "build": m.build.to_dict(),
        "has_embeddings": (index_dir / "embeddings" / MANIFEST).is_file(),
        "finished": m.quality is not None,
        "columns": {n: str(t) for n, t in store.metadata_columns.items()},
        "schema": {"layout": store.schema.layout, "roles": store.schema.roles(),
                   "recorded": m.schema is not None},
        "live_notes": len(store.ids()),
        "modes": ["dense", "lexical", "hybrid"] if m.lexical else ["dense"],
        "lexical": None if m.lexical is None else {
            "documents": m.lexical.documents, "analyzer": m.lexical.analyzer,
            "bytes": sum(f.size_bytes for f in m.lexical.refs()),
            "segments": [{"documents": s.documents, "rows": [s.first_row, s.end_row],
                          "bytes": sum(f.size_bytes for f in s.refs())}
                         for s in m.lexical.segments]},
    }

