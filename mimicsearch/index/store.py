"""The metadata store beside an index: what a hit shows, looked up by faiss row id.

Parquet parts under INDEX/store/, rows numbered globally from 0: a faiss id IS the store
row. Removed rows keep their number (a tombstone list marks them) so ids never shift.
Columns: row, id (the note's own id), [window], SUBJECT_ID, HADM_ID, CATEGORY, CHARTDATE,
snippet. Metadata values are strings (null when absent), as the embeddings stage keeps them.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..embeddings import SNIPPET, snippet
from ..fileio import atomic_path
from .manifest import FileRef, IndexManifest, StorePart

STORE_DIR = "store"
METADATA = ("SUBJECT_ID", "HADM_ID", "CATEGORY", "CHARTDATE")


def store_table(metadata: pa.Table, first_row: int, id_type: str,
                text_col: str = "TEXT") -> pa.Table:
    """Normalise an encoder metadata table (id, [window], any metadata, a snippet or the
    text) to the store's columns, numbering rows from `first_row`. Column names match
    case-insensitively."""
    by_name = {c.upper(): c for c in metadata.column_names}
    if "ID" not in by_name:
        raise ValueError(f"metadata has no 'id' column (columns: {metadata.column_names})")
    n = metadata.num_rows
    ids = metadata.column(by_name["ID"])
    id_arrow = pa.int64() if id_type == "int64" else pa.string()
    try:
        ids = ids.cast(id_arrow)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise ValueError(f"note ids are {ids.type}, the index holds {id_type} ids") from None
    if ids.null_count:
        raise ValueError(f"{ids.null_count} rows have no id")
    cols = {"row": pa.array(np.arange(first_row, first_row + n, dtype=np.int64)), "id": ids}
    if "WINDOW" in by_name:
        cols["window"] = metadata.column(by_name["WINDOW"]).cast(pa.int32())
    for name in METADATA:
        cols[name] = (metadata.column(by_name[name]).cast(pa.string()) if name in by_name
                      else pa.nulls(n, pa.string()))
    if SNIPPET.upper() in by_name:  # cut while encoding
        cols[SNIPPET] = metadata.column(by_name[SNIPPET.upper()]).cast(pa.string())
    elif text_col.upper() in by_name:  # in-memory tables with their full text
        texts = metadata.column(by_name[text_col.upper()]).cast(pa.string()).to_pylist()
        cols[SNIPPET] = pa.array([None if t is None else snippet(t) for t in texts], pa.string())
    else:
        cols[SNIPPET] = pa.nulls(n, pa.string())
    return pa.table(cols)


def write_part(index_dir: str | Path, table: pa.Table) -> StorePart:
    name = f"{STORE_DIR}/part-{uuid.uuid4().hex[:12]}.parquet"
    path = Path(index_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return StorePart(FileRef.of(index_dir, name), table.num_rows)


def write_deleted(index_dir: str | Path, rows: np.ndarray) -> FileRef:
    name = f"{STORE_DIR}/deleted-{uuid.uuid4().hex[:12]}.parquet"
    path = Path(index_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(pa.table({"row": pa.array(np.unique(rows).astype(np.int64))}), tmp)
    return FileRef.of(index_dir, name)


class MetadataStore:
    """All store rows in memory-mapped Arrow; `live[row]` is False for removed rows."""

    def __init__(self, table: pa.Table, deleted_rows: np.ndarray, id_type: str = "int64"):
        rows = table.column("row").to_numpy()
        if not np.array_equal(rows, np.arange(len(rows))):
            raise ValueError("store rows are not numbered 0..n-1 in order")
        self.table = table
        self.id_type = id_type
        self.live = np.ones(table.num_rows, dtype=bool)
        self.live[deleted_rows] = False

    @classmethod
    def load(cls, index_dir: str | Path, manifest: IndexManifest,
             verify: bool = True) -> MetadataStore:
        tables = []
        for part in manifest.store_parts:
            path = part.file.verify(index_dir) if verify else Path(index_dir) / part.file.file
            t = pq.read_table(path, memory_map=True)
            if t.num_rows != part.rows:
                raise ValueError(f"{path} has {t.num_rows} rows, the manifest says {part.rows}")
            tables.append(t)
        table = pa.concat_tables(tables, promote_options="default")
        deleted = np.zeros(0, dtype=np.int64)
        if manifest.deleted is not None:
            path = (manifest.deleted.verify(index_dir) if verify
                    else Path(index_dir) / manifest.deleted.file)
            deleted = pq.read_table(path).column("row").to_numpy()
        return cls(table, deleted, manifest.id_type)

    def __len__(self) -> int:
        return self.table.num_rows

    def parse_ids(self, ids: Iterable) -> list:
        """User-given ids (often strings from the command line) as the index's id type."""
        if self.id_type == "string":
            return [str(i) for i in ids]
        out = []
        for i in ids:
            try:
                out.append(int(i))
            except (TypeError, ValueError):
                raise ValueError(f"note id {i!r} is not an integer; this index holds "
                                 "integer ids") from None
        return out

    def rows_of(self, ids: Sequence) -> tuple[np.ndarray, list]:
        """Live rows holding `ids` (all windows of a note), and the ids not found."""
        ids = self.parse_ids(ids)
        col = self.table.column("id")
        hit = pc.is_in(col, value_set=pa.array(ids, col.type)).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(hit & self.live)
        found = set(col.take(pa.array(rows)).to_pylist()) if len(rows) else set()
        return rows, [i for i in ids if i not in found]

    def mask(self, subjects: Sequence[str] = (), categories: Sequence[str] = (),
             exclude_subjects: Sequence[str] = ()) -> np.ndarray:
        """Live rows passing the filters (categories match case-insensitively)."""
        keep = self.live.copy()
        if subjects:
            keep &= self._in("SUBJECT_ID", [str(s) for s in subjects])
        if exclude_subjects:
            keep &= ~self._in("SUBJECT_ID", [str(s) for s in exclude_subjects])
        if categories:
            col = pc.utf8_lower(pc.utf8_trim_whitespace(self.table.column("CATEGORY")))
            want = pa.array([c.strip().lower() for c in categories], pa.string())
            keep &= pc.is_in(col, value_set=want).to_numpy(zero_copy_only=False)
        return keep

    def _in(self, column: str, values: list[str]) -> np.ndarray:
        col = self.table.column(column)
        return pc.is_in(col, value_set=pa.array(values, pa.string())).to_numpy(
            zero_copy_only=False)

    def records(self, rows: Sequence[int]) -> list[dict]:
        """Store rows as plain dicts, in the order given."""
        if len(rows) == 0:
            return []
        return self.table.take(pa.array(np.asarray(rows, dtype=np.int64))).to_pylist()

    def categories(self) -> dict[str, int]:
        counts = pc.value_counts(self.table.filter(pa.array(self.live)).column("CATEGORY"))
        return {str(c["values"]): int(c["counts"]) for c in counts.to_pylist()}
