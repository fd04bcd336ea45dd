"""The metadata store beside an index: what a hit shows, looked up by faiss row id.

Parquet parts under INDEX/store/, rows numbered globally from 0: a faiss id IS the store
row. Removed rows keep their number (a tombstone list marks them) so ids never shift.
Columns: row, id (the note's own id), [window], every metadata column the notes were
encoded with (by default every role's column, `schema.py`: SUBJECT_ID, HADM_ID, CHARTDATE,
CHARTTIME, CATEGORY, ISERROR for MIMIC-III; the source's own names), text_hash,
snippet. A note's whole text, where kept, lives in a file beside its part (`texts.py`), read
by row only when asked for, so the loaded store's memory does not grow with note length. Parts hold metadata as the text the notes file held; the loaded store gives each
column its type (integers, dates, timestamps, else strings) from all its values, so an id
that went through pandas as 2588.0 is the integer 2588 and dates compare as dates.
"""
from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..embeddings import FULL_TEXT, SNIPPET, TEXT_HASH, snippet
from ..fileio import atomic_path
from ..schema import NoteSchema, for_store
from .manifest import FileRef, IndexManifest, StorePart
from .texts import NoteTexts, TextsWriter

STORE_DIR = "store"
RESERVED = ("row", "id", "window", "line", TEXT_HASH, SNIPPET, "embedding")
INT_TEXT = r"^\s*[+-]?(0|[1-9][0-9]{0,17})(\.0+)?\s*$"  # within int64; no leading zeros
DATE_TEXT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
TIME_TEXT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?$"


def store_table(metadata: pa.Table, first_row: int, id_type: str,
                text_col: str = "TEXT") -> pa.Table:
    """Normalise an encoder metadata table (id, [window], metadata, [text_hash], a snippet
    and/or the text) to the store's columns, numbering rows from `first_row`, with the whole
    text as a last `text` column where the table has it. Every other column is metadata,
    kept as text."""
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
    skip = {c.upper() for c in RESERVED} | {text_col.upper()}
    for name in metadata.column_names:
        if name.upper() not in skip:
            cols[name] = _as_text(metadata.column(name))
    cols[TEXT_HASH] = (metadata.column(by_name[TEXT_HASH.upper()]).cast(pa.string())
                       if TEXT_HASH.upper() in by_name else pa.nulls(n, pa.string()))
    if SNIPPET.upper() in by_name:  # cut while encoding
        cols[SNIPPET] = metadata.column(by_name[SNIPPET.upper()]).cast(pa.string())
    elif text_col.upper() in by_name:  # in-memory tables with their full text
        texts = metadata.column(by_name[text_col.upper()]).cast(pa.string()).to_pylist()
        cols[SNIPPET] = pa.array([None if t is None else snippet(t) for t in texts], pa.string())
    else:
        cols[SNIPPET] = pa.nulls(n, pa.string())
    if text_col.upper() in by_name:
        text = metadata.column(by_name[text_col.upper()]).cast(pa.string())
        if "window" in cols:  # a note's text once, on its first window
            text = pc.if_else(pc.equal(cols["window"], 0), text, pa.scalar(None, pa.string()))
        cols[FULL_TEXT] = text
    return pa.table(cols)


def _as_text(col) -> pa.ChunkedArray | pa.Array:
    if pa.types.is_floating(col.type):  # integral floats: pandas' integers after a NaN
        as_int = pc.cast(col, pa.int64(), safe=False)
        if pc.all(pc.or_kleene(pc.is_null(col), pc.equal(pc.cast(as_int, col.type), col))
                  ).as_py() is not False:
            col = as_int
    return col.cast(pa.string())


def typed_column(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A text column as int64, date32 or timestamp when every value is one, else as is."""
    col = col.cast(pa.string())
    values = col.drop_null()
    if len(values) == 0:
        return col
    trimmed = pc.utf8_trim_whitespace(col)
    for pattern, to in ((INT_TEXT, pa.int64()), (DATE_TEXT, pa.date32()),
                        (TIME_TEXT, pa.timestamp("us"))):
        if pc.all(pc.match_substring_regex(values, pattern)).as_py():
            try:
                return pc.cast(pc.replace_substring_regex(trimmed, r"\.0+$", "")
                               if to == pa.int64() else trimmed, to)
            except pa.ArrowInvalid:  # e.g. 2150-02-30
                return col
    return col


def write_part(index_dir: str | Path, table: pa.Table) -> StorePart:
    """A store part, and its texts file where `table` carries whole texts."""
    writer = PartWriter(index_dir)
    try:
        writer.add(table)
    except BaseException as e:
        writer.abort(e)
        raise
    return writer.close()


class PartWriter:
    """A store part written as its tables stream past (metadata Parquet a row group per
    table, texts re-cut into their file's batches), so a build piece holds one batch of
    texts, not all of its notes'. `close()` gives the StorePart."""

    def __init__(self, index_dir: str | Path):
        self.dir = Path(index_dir)
        self.stem = f"{STORE_DIR}/part-{uuid.uuid4().hex[:12]}"
        (self.dir / STORE_DIR).mkdir(parents=True, exist_ok=True)
        self._stack = contextlib.ExitStack()
        self._meta = self._texts = None
        self._schema = None
        self.rows = 0
        self._any_text = False

    def add(self, table: pa.Table) -> None:
        if FULL_TEXT in table.column_names:
            column = table.column(FULL_TEXT)
            table = table.drop_columns([FULL_TEXT])
            if self._texts is None:
                self._texts = self._stack.enter_context(
                    TextsWriter(self.dir, f"{self.stem}.text.arrow"))
                if self.rows:
                    self._texts.add(pa.nulls(self.rows, pa.string()))
            self._texts.add(column)
            self._any_text = self._any_text or column.null_count < len(column)
        elif self._texts is not None:
            self._texts.add(pa.nulls(table.num_rows, pa.string()))
        if self._meta is None:
            self._schema = table.schema
            tmp = self._stack.enter_context(atomic_path(self.dir / f"{self.stem}.parquet",
                                                        new=True))
            self._meta = pq.ParquetWriter(tmp, self._schema)
        self._meta.write_table(table.select(self._schema.names).cast(self._schema))
        self.rows += table.num_rows

    def close(self) -> StorePart:
        if self._meta is None:
            raise ValueError("a store part needs at least one table")
        self._meta.close()
        texts = self._texts
        self._stack.close()
        text = texts.ref if texts is not None and self._any_text else None
        if texts is not None and text is None:  # every text null: no file
            (self.dir / texts.name).unlink(missing_ok=True)
        return StorePart(FileRef.of(self.dir, f"{self.stem}.parquet"), self.rows, text)

    def abort(self, exc: BaseException) -> None:
        if self._meta is not None:
            self._meta.close()
        self._stack.__exit__(type(exc), exc, exc.__traceback__)


def document_rows(table: pa.Table) -> np.ndarray:
    """Rows of `table` that stand for their note as a lexical document: a note's first
    row (the windows of a note share its text)."""
    if "window" not in table.column_names:
        return np.arange(table.num_rows, dtype=np.int64)
    window = table.column("window").to_numpy(zero_copy_only=False)
    return np.flatnonzero(window == 0).astype(np.int64)


def write_deleted(index_dir: str | Path, rows: np.ndarray) -> FileRef:
    name = f"{STORE_DIR}/deleted-{uuid.uuid4().hex[:12]}.parquet"
    path = Path(index_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, new=True) as tmp:
        pq.write_table(pa.table({"row": pa.array(np.unique(rows).astype(np.int64))}), tmp)
    return FileRef.of(index_dir, name)


# records() of at most this many rows slices them out one by one: Arrow's take on a column
# of many chunks (a row group per build batch, a part per commit) first concatenates them,
# 80 ms a query at 2M rows.
FEW_ROWS = 2048


class MetadataStore:
    """All store rows in Arrow, metadata typed; `live[row]` is False for removed rows."""

    def __init__(self, table: pa.Table, deleted_rows: np.ndarray, id_type: str = "int64",
                 texts: NoteTexts | None = None, schema: NoteSchema | None = None):
        rows = table.column("row").to_numpy()
        if not np.array_equal(rows, np.arange(len(rows))):
            raise ValueError("store rows are not numbered 0..n-1 in order")
        for name in table.column_names:
            if name not in RESERVED:
                table = table.set_column(table.column_names.index(name), name,
                                         typed_column(table.column(name)))
        self.table = table
        self.id_type = id_type
        self.live = np.ones(table.num_rows, dtype=bool)
        self.live[deleted_rows] = False
        self.texts = texts or NoteTexts.empty(table.num_rows)
        self._counts: dict[str, dict] = {}
        # Roles of the stored columns; a column `columns=` left out of the load has none.
        self.schema = for_store(table.column_names, schema)

    @classmethod
    def load(cls, index_dir: str | Path, manifest: IndexManifest,
             verify: bool = True, columns: Sequence[str] | None = None) -> MetadataStore:
        """`columns`: only these (and `row`, `id`, `window`), for a writer that needs no
        more (a 2M-row store's snippets alone are 400 MB)."""
        tables = []
        for part in manifest.store_parts:
            path = part.file.verify(index_dir) if verify else Path(index_dir) / part.file.file
            want = None
            if columns is not None:
                names = pq.read_schema(path).names
                want = [c for c in names if c in {"row", "id", "window", *columns}]
            t = pq.read_table(path, memory_map=True, columns=want)
            if t.num_rows != part.rows:
                raise ValueError(f"{path} has {t.num_rows} rows, the manifest says {part.rows}")
            tables.append(t)
        table = pa.concat_tables(tables, promote_options="default")
        deleted = np.zeros(0, dtype=np.int64)
        if manifest.deleted is not None:
            path = (manifest.deleted.verify(index_dir) if verify
                    else Path(index_dir) / manifest.deleted.file)
            deleted = pq.read_table(path).column("row").to_numpy()
        return cls(table, deleted, manifest.id_type,
                   NoteTexts.open(index_dir, manifest.store_parts, verify), manifest.schema)

    @staticmethod
    def schema_of(index_dir: str | Path, manifest: IndexManifest) -> NoteSchema:
        """The roles of an index's stored columns, read from its parts' schemas only."""
        names: dict[str, None] = {}
        for part in manifest.store_parts:
            names.update(dict.fromkeys(pq.read_schema(Path(index_dir) / part.file.file).names))
        return for_store(names, manifest.schema)

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def metadata_columns(self) -> dict[str, pa.DataType]:
        """The stored metadata columns and their types, in store order."""
        return {f.name: f.type for f in self.table.schema if f.name not in RESERVED}

    def parse_ids(self, ids: Iterable) -> list:
        """User-given ids (often strings from the command line) as the index's id type."""
        if isinstance(ids, (str, bytes)):
            raise TypeError(f"ids={ids!r}: give a list of ids, not one string")
        if self.id_type == "string":
            return [str(i) for i in ids]
        out = []
        for i in ids:
            try:
                value = int(i)
            except (TypeError, ValueError):
                raise ValueError(f"note id {i!r} is not an integer; this index holds "
                                 "integer ids") from None
            if not -(2**63) <= value < 2**63:
                raise ValueError(f"note id {i!r} is outside int64; this index holds int64 ids")
            out.append(value)
        return out

    def rows_of(self, ids: Sequence) -> tuple[np.ndarray, list]:
        """Live rows holding `ids` (all windows of a note), and the ids not found."""
        ids = self.parse_ids(ids)
        col = self.table.column("id")
        hit = pc.is_in(col, value_set=pa.array(ids, col.type)).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(hit & self.live)
        found = set(col.take(pa.array(rows)).to_pylist()) if len(rows) else set()
        return rows, [i for i in ids if i not in found]

    def notes_table(self, columns: Sequence[str]) -> pa.Table:
        """The live notes, one row each (a note's first window in windows mode)."""
        keep = self.live
        if "window" in self.table.column_names:
            keep = keep & (self.table.column("window").to_numpy(zero_copy_only=False) == 0)
        return self.table.select(list(columns)).filter(pa.array(keep))

    def ids(self) -> pa.Array:
        """The ids of the live notes, in store order."""
        return self.notes_table(["id"]).column("id").combine_chunks()

    def mask(self, where: pc.Expression | None = None) -> np.ndarray:
        """Live rows for which `where` (an Arrow compute expression) is true."""
        keep = self.live.copy()
        if where is None:
            return keep
        try:
            rows = self.table.select(["row", *self.metadata_columns]).filter(where)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise ValueError(f"cannot apply the filter {where}: {str(e).splitlines()[0]} "
                             f"(columns: {self.describe_columns()})") from None
        chosen = np.zeros(len(keep), dtype=bool)
        chosen[rows.column("row").to_numpy()] = True
        return keep & chosen

    def describe_columns(self) -> str:
        return ", ".join(f"{n} ({t})" for n, t in self.metadata_columns.items())

    def records(self, rows: Sequence[int]) -> list[dict]:
        """Store rows as plain dicts, in the order given."""
        if len(rows) == 0:
            return []
        if len(rows) <= FEW_ROWS:  # Arrow's take concatenates every chunk of a column
            return pa.concat_tables([self.table.slice(int(r), 1) for r in rows]).to_pylist()
        return self.table.take(pa.array(np.asarray(rows, dtype=np.int64))).to_pylist()

    def value_counts(self, column: str) -> dict:
        """Live notes per value of `column` (null values left out); computed once per
        column (a loaded store never changes: writers commit new files)."""
        if column not in self.metadata_columns:
            raise ValueError(f"no column {column!r}; columns: {self.describe_columns()}")
        if column not in self._counts:
            counts = pc.value_counts(self.notes_table([column]).column(column))
            self._counts[column] = {c["values"]: int(c["counts"]) for c in counts.to_pylist()
                                    if c["values"] is not None}
        return self._counts[column]

    def categories(self) -> dict[str, int]:
        c = self.schema.category
        return self.value_counts(c) if c in self.metadata_columns else {}
