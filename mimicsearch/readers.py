"""Streaming readers for note corpora: batches of records with their source line numbers.

The input is a file (CSV/TSV/JSONL, optionally gzipped, or Parquet) or an in-memory table:
anything Arrow can read through the C stream interface (pyarrow Table / RecordBatchReader,
pandas, polars). Every input row ends up either in a batch or in its rejects, with its line
number (its 1-based row number for Parquet and tables) and the reason, so
`read = accepted + rejected` always holds. Rows that make the file itself
unreadable (unbalanced quotes, wrong column count, invalid JSON) raise `MalformedInputError`
naming file and line: silently skipping them would shift every following row.
"""
from __future__ import annotations

import contextlib
import csv
import enum
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from .fileio import atomic_path
from .idset import IdSet
from .schema import LAYOUTS, NoteSchema, SchemaError, column_matcher, detect, parse_columns

# Discharge summaries reach ~100k characters; the limit stops an unbalanced quote from
# reading the rest of a multi-GB file into one field.
FIELD_LIMIT = 64 << 20
_INT = re.compile(r"\s*[+-]?[0-9]+\s*\Z")  # ASCII digits: int() also takes "٣"


class InputFormat(str, enum.Enum):
    CSV = "csv"
    TSV = "tsv"
    PARQUET = "parquet"
    JSONL = "jsonl"
    TABLE = "table"  # an in-memory Arrow-compatible table or stream


FILE_FORMATS = [f.value for f in InputFormat if f is not InputFormat.TABLE]


def is_table(obj) -> bool:
    """Whether `obj` is an in-memory table the readers take (not a path)."""
    return (isinstance(obj, (pa.Table, pa.RecordBatchReader)) or _is_pandas(obj)
            or hasattr(obj, "__arrow_c_stream__"))


def _is_pandas(obj) -> bool:
    return type(obj).__module__.startswith("pandas") and type(obj).__name__ == "DataFrame"


def arrow_stream(obj):
    """A pyarrow Table or RecordBatchReader over `obj` (pandas keeps its nullable integer
    columns as integers; its index is dropped)."""
    if isinstance(obj, (pa.Table, pa.RecordBatchReader)):
        return obj
    if _is_pandas(obj):
        return pa.Table.from_pandas(obj, preserve_index=False)
    if hasattr(obj, "__arrow_c_stream__"):
        return pa.RecordBatchReader.from_stream(obj)
    raise TypeError(f"expected a notes file path or an Arrow-compatible table, got "
                    f"{type(obj).__name__}")


def as_table(obj) -> pa.Table:
    """`obj` as a pyarrow Table, a stream read to its end (for readers that pass twice)."""
    stream = arrow_stream(obj)
    return stream if isinstance(stream, pa.Table) else stream.read_all()


def describe_input(obj) -> str:
    """How messages name an input: its path, or the kind of table."""
    if is_table(obj):
        rows = getattr(obj, "num_rows", None)
        return f"<{type(obj).__name__}{'' if rows is None else f' of {rows} rows'}>"
    return str(obj)


class IdType(str, enum.Enum):
    AUTO = "auto"  # the layout's: int64 for ROW_ID, OMOP note_id and row numbers, else string
    INT = "int64"
    STR = "string"


class MalformedInputError(ValueError):
    """The input file cannot be parsed past this point; names file and line."""


@dataclass(frozen=True)
class Reject:
    line: int
    id: str
    reason: str
    text: str | None = None
    file: str | None = None  # set where the input is several files

    @property
    def where(self) -> str:
        return str(self.line) if self.file is None else f"{self.file}:{self.line}"


def write_rejects(path: str | Path, rejects: list[Reject], show_text: bool = False,
                  new: bool = False) -> None:
    """A rejects file: line (FILE:LINE where the input was several files), id, reason (and
    the note's text only with `show_text`); every engine and command writes them through
    here. `new`: see fileio.atomic_path."""
    with atomic_path(path, new=new) as tmp, open(tmp, "w", encoding="utf-8",
                                                  newline="") as f:
        w = csv.writer(f)
        w.writerow(["line", "id", "reason"] + (["text"] if show_text else []))
        for r in rejects:
            w.writerow([r.where, r.id, r.reason] + ([r.text or ""] if show_text else []))


@dataclass
class RecordBatch:
    """Accepted records (parallel lists) and the rejected rows of one stretch of input."""

    start: int  # input records before this batch
    records: int  # input records in this batch: len(texts) + len(rejects)
    lines: np.ndarray  # int64 [n] first source line of each accepted record
    ids: list
    texts: list[str]
    metadata: dict[str, list[str | None]]
    rejects: list[Reject] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)  # 1-based record number of each accepted


def detect_format(path: str | Path) -> InputFormat:
    name = Path(path).name.lower().removesuffix(".gz")
    for suffix, fmt in ((".csv", InputFormat.CSV), (".tsv", InputFormat.TSV),
                        (".tab", InputFormat.TSV), (".parquet", InputFormat.PARQUET),
                        (".pq", InputFormat.PARQUET), (".jsonl", InputFormat.JSONL),
                        (".ndjson", InputFormat.JSONL)):
        if name.endswith(suffix):
            return fmt
    raise ValueError(f"cannot tell the format of {path} from its name; valid: "
                     f"{FILE_FORMATS} (pass --format)")


def _find(columns: list[str], wanted: str, what: str, path) -> str:
    found = column_matcher(columns, str(path))(wanted)
    if found is None:
        raise ValueError(f"{path}: no {what} column {wanted!r}; columns: {columns}")
    return found


@dataclass(frozen=True)
class Columns:
    """Which source columns hold the text, the id and the metadata to keep, and the note
    schema (mimicsearch/schema.py) that gives them their roles."""

    text: str
    id: str | None
    keep: tuple[str, ...]
    id_type: IdType
    schema: NoteSchema | None = None

    @classmethod
    def resolve(cls, columns: list[str], path, text_col: str | None = None,
                id_col: str | None = None, keep: list[str] | None = None,
                id_type: IdType | str = IdType.AUTO, mapping=None) -> Columns:
        """`mapping`: `--columns` roles (`schema.parse_columns`); `text_col` and `id_col`
        name those two roles; `keep` replaces the columns kept (by default every role's)."""
        given = parse_columns(mapping)
        for role, col, flag in (("text", text_col, "--text-col"), ("id", id_col, "--id-col")):
            if col is not None:
                if given.get(role, col) != col:
                    raise SchemaError(f"{flag} {col} and --columns {role}={given[role]} "
                                      "disagree; give one")
                given[role] = col
        try:
            schema = detect(columns, str(path), given)
        except SchemaError as e:
            if text_col is None and "text" not in given:
                raise SchemaError(f"{e} (or --text-col)") from None
            raise
        text, id_ = schema.text, schema.id
        if keep is None:
            kept = list(schema.metadata)
        else:
            kept = [_find(columns, c, "metadata", path) for c in keep]
        kept = [c for c in dict.fromkeys(kept) if c not in (text, id_)]
        for c in (text, id_, *kept):
            if c is not None and columns.count(c) > 1:
                raise MalformedInputError(f"{path}: line 1: column {c!r} appears "
                                          f"{columns.count(c)} times in the header; rename one")
        id_type = IdType(id_type)
        if id_type is IdType.AUTO:
            layout = LAYOUTS.get(schema.layout.removesuffix("+columns"))
            native = layout is not None and id_ is not None and \
                layout.columns["id"].lower() == id_.lower()
            id_type = (IdType.INT if id_ is None else  # row numbers
                       IdType(layout.id_type) if native else IdType.STR)
        schema = replace(schema, id_type=id_type.value)
        return cls(text, id_, tuple(kept), id_type, schema)


def _undecodable(s: str) -> bool:
    """True when `s` holds bytes that were not UTF-8 (decoded with surrogateescape)."""
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _as_text(v) -> str:
    """A metadata value as the text a CSV would hold: integral floats (pandas' nullable
    integers after a NaN) without ".0", dates and times in ISO form."""
    if isinstance(v, str):
        return v
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if hasattr(v, "isoformat"):
        return v.isoformat(sep=" ") if hasattr(v, "hour") else v.isoformat()
    return str(v)


class Reader:
    """Iterate over an input file as `RecordBatch`es of `batch_size` records.

    `skip` records are read and dropped (resume); `seen` (an `IdSet`) maps ids already
    accepted to their line, so duplicates are caught across a resumed run too.
    """

    def __init__(self, path, text_col: str | None = None, id_col: str | None = None,
                 keep: list[str] | None = None, id_type: IdType | str = IdType.AUTO,
                 input_format: InputFormat | str | None = None, batch_size: int = 1024,
                 skip: int = 0, seen: IdSet | None = None, show_text: bool = False,
                 delimiter: str | None = None, columns=None):
        self._table = None
        if is_table(path):
            if input_format not in (None, InputFormat.TABLE, InputFormat.TABLE.value):
                raise ValueError(f"input_format={input_format!r} is for files; this input "
                                 "is a table")
            self._table = arrow_stream(path)
            self.path = describe_input(path)
            self.format = InputFormat.TABLE
        else:
            self.path = Path(path)
            if not self.path.exists():
                raise FileNotFoundError(f"input file not found: {self.path}")
            if not self.path.is_file():
                raise ValueError(f"{self.path} is not a regular file (a directory, FIFO or "
                                 "device): notes are read twice, so give a file")
            self.format = InputFormat(input_format) if input_format else detect_format(path)
            if self.format is InputFormat.TABLE:
                raise ValueError(f"{path}: input_format='table' is for in-memory tables")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        self.batch_size = batch_size
        self.skip = skip
        self.seen = IdSet() if seen is None else seen
        self.show_text = show_text
        self.delimiter = delimiter or ("\t" if self.format is InputFormat.TSV else ",")
        self._size = 1 if self._table is not None else max(self.path.stat().st_size, 1)
        self._raw = None
        self._rows: Iterator | None = None
        self._parquet_rows = 0
        self._consumed = 0
        self._done = False
        with self._gzip_errors():
            header = self._open()
        self.columns = Columns.resolve(header, self.path, text_col, id_col, keep, id_type,
                                       columns)
        self._header = header

    # -- sources: each yields (line, text, id, metadata tuple) with raw values -------------

    def _text_stream(self) -> io.TextIOWrapper:
        self._raw = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        stream = gzip.GzipFile(fileobj=self._raw) if self.path.name.endswith(".gz") else self._raw
        return io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape",
                                newline="")

    def _open(self) -> list[str]:
        if self.format is InputFormat.TABLE:
            self._parquet_rows = getattr(self._table, "num_rows", 0)
            return list(self._table.schema.names)
        if self.format is InputFormat.PARQUET:
            import pyarrow.parquet as pq

            try:
                self._pq = pq.ParquetFile(self.path)
            except (pa.ArrowException, OSError) as e:
                raise MalformedInputError(f"{self.path}: not a readable Parquet file ({e})"
                                          ) from None
            self._parquet_rows = self._pq.metadata.num_rows
            return self._pq.schema_arrow.names
        if self.format is InputFormat.JSONL:
            # Columns of a JSONL file: every key of every object, in first-seen order (one
            # pass before reading; an object without a key holds null there).
            keys: dict[str, None] = {}
            self._stream = self._text_stream()
            for _, obj in self._jsonl_objects():
                keys.update(dict.fromkeys(obj))
            self._stream.close()
            self._stream = self._text_stream()
            return list(keys)
        csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
        self._stream = self._text_stream()
        self._csv = csv.reader(self._stream, delimiter=self.delimiter, strict=True)
        try:
            header = next(self._csv)
        except StopIteration:
            raise MalformedInputError(f"{self.path}: empty file, expected a header row") from None
        except csv.Error as e:
            raise MalformedInputError(f"{self.path}: line 1: {e}") from None
        if any(_undecodable(h) for h in header):
            raise MalformedInputError(f"{self.path}: line 1: header is not UTF-8")
        return header

    def _csv_rows(self) -> Iterator[tuple]:
        header, c = self._header, self.columns
        n = len(header)
        ti = header.index(c.text)
        ii = header.index(c.id) if c.id is not None else None
        ki = [header.index(k) for k in c.keep]
        reader, record = self._csv, 0
        prev = reader.line_num
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise MalformedInputError(
                    f"{self.path}: record starting at line {prev + 1}: {e} "
                    "(an unbalanced quote?)") from None
            start, prev = prev + 1, reader.line_num
            if not row:
                continue  # blank line: not a record
            record += 1
            if len(row) != n:
                raise MalformedInputError(
                    f"{self.path}: line {start}: expected {n} columns, found {len(row)} "
                    "(an unbalanced quote or an unquoted delimiter?)")
            yield (start, row[ti], row[ii] if ii is not None else record,
                   tuple(row[i] for i in ki))

    def _jsonl_objects(self) -> Iterator[tuple[int, dict]]:
        """(line number, object) of each non-blank line."""
        for line_no, line in enumerate(self._guarded(iter(self._stream)), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise MalformedInputError(
                    f"{self.path}: line {line_no}: invalid JSON ({e.msg})") from None
            except ValueError:  # a number over int()'s 4300-digit limit
                raise MalformedInputError(
                    f"{self.path}: line {line_no}: invalid JSON (a number too long)") from None
            if not isinstance(obj, dict):
                raise MalformedInputError(f"{self.path}: line {line_no}: expected a JSON object")
            yield line_no, obj

    def _jsonl_rows(self) -> Iterator[tuple]:
        c = self.columns
        for record, (line_no, obj) in enumerate(self._jsonl_objects(), 1):
            yield (line_no, obj.get(c.text), obj.get(c.id) if c.id is not None else record,
                   tuple(obj.get(k) for k in c.keep))

    def _batches(self, cols: list[str]):
        if self.format is InputFormat.PARQUET:
            yield from self._pq.iter_batches(batch_size=self.batch_size, columns=cols)
            return
        table = self._table
        batches = (table.to_batches(max_chunksize=self.batch_size)
                   if hasattr(table, "to_batches") else table)
        for b in batches:
            for start in range(0, b.num_rows, self.batch_size):
                yield b.slice(start, self.batch_size).select(cols)

    def _parquet_source(self) -> Iterator[tuple]:
        c = self.columns
        cols = list(dict.fromkeys([c.text] + ([c.id] if c.id else []) + list(c.keep)))
        row = 0
        for batch in self._batches(cols):
            data = batch.to_pydict()
            n = batch.num_rows
            texts = data[c.text]
            ids = data[c.id] if c.id else range(row + 1, row + n + 1)
            meta = list(zip(*(data[k] for k in c.keep))) if c.keep else [()] * n
            yield from zip(range(row + 1, row + n + 1), texts, ids, meta)
            row += n

    def _source(self) -> Iterator[tuple]:
        if self.format in (InputFormat.PARQUET, InputFormat.TABLE):
            return self._parquet_source()
        if self.format is InputFormat.JSONL:
            return self._jsonl_rows()
        return self._csv_rows()

    def progress(self) -> float:
        """Fraction of the input consumed (by bytes; by rows for Parquet)."""
        if self._done:
            return 1.0
        if self.format in (InputFormat.PARQUET, InputFormat.TABLE):
            return self._consumed / max(self._parquet_rows, 1)
        if self._raw is not None and not self._raw.closed:
            return min(self._raw.tell() / self._size, 1.0)
        return 0.0

    @property
    def total_rows(self) -> int | None:
        """Row count when the input records it (Parquet, tables), else None."""
        if self.format is InputFormat.TABLE:
            return self._parquet_rows or None
        return self._parquet_rows if self.format is InputFormat.PARQUET else None

    # -- validation --------------------------------------------------------------------

    def _check(self, line: int, text, raw_id, meta: tuple):
        """(id, text, metadata) for a good row, or a Reject."""
        shown = text if self.show_text and isinstance(text, str) else None
        id_str = "" if raw_id is None else str(raw_id)
        if isinstance(raw_id, str) and _undecodable(raw_id):
            return Reject(line, id_str.encode("utf-8", "backslashreplace").decode(),
                          "id is not valid UTF-8", shown)
        if self.columns.id_type is IdType.INT:
            if isinstance(raw_id, bool) or raw_id is None:
                return Reject(line, id_str, "missing id" if raw_id is None else "bad id", shown)
            if isinstance(raw_id, int):
                id_ = raw_id
            elif isinstance(raw_id, float) and raw_id.is_integer():
                id_ = int(raw_id)  # pandas writes nullable integer columns as floats
            elif isinstance(raw_id, str) and _INT.match(raw_id):
                if len(raw_id.strip().lstrip("+-").lstrip("0")) > 19:  # int() refuses >4300
                    return Reject(line, id_str[:40], "bad id: outside int64", shown)
                id_ = int(raw_id)
            else:
                return Reject(line, id_str, "missing id" if id_str.strip() == "" else
                              "bad id: not an integer", shown)
            if not -(2**63) <= id_ < 2**63:
                return Reject(line, id_str, "bad id: outside int64", shown)
        else:
            id_ = id_str.strip()
            if not id_:
                return Reject(line, id_str, "missing id", shown)
        if text is None:
            return Reject(line, id_str, "missing text", None)
        if not isinstance(text, str):
            return Reject(line, id_str, f"text is a {type(text).__name__}, not a string", None)
        if _undecodable(text):
            return Reject(line, id_str, "text is not valid UTF-8",
                          text.encode("utf-8", "backslashreplace").decode() if shown else None)
        if not text.strip():
            return Reject(line, id_str, "empty text", None)
        values = []
        for k, v in zip(self.columns.keep, meta):
            if v is None or v == "":
                values.append(None)
                continue
            v = _as_text(v)
            if _undecodable(v):
                return Reject(line, id_str, f"column {k} is not valid UTF-8", shown)
            values.append(v)
        first = self.seen.get(id_)
        if first is not None:
            return Reject(line, id_str, f"duplicate id (first at line {first})", shown)
        self.seen[id_] = line
        return id_, text, values

    def __iter__(self) -> Iterator[RecordBatch]:
        keep = self.columns.keep
        consumed = 0
        batch = None
        try:
            for line, text, raw_id, meta in self._guarded(self._source()):
                consumed += 1
                self._consumed = consumed
                if consumed <= self.skip:
                    continue
                if batch is None:
                    batch = RecordBatch(consumed - 1, 0, [], [], [], {k: [] for k in keep})
                batch.records += 1
                got = self._check(line, text, raw_id, meta)
                if isinstance(got, Reject):
                    batch.rejects.append(got)
                else:
                    batch.lines.append(line)
                    batch.numbers.append(consumed)
                    batch.ids.append(got[0])
                    batch.texts.append(got[1])
                    for k, v in zip(keep, got[2]):
                        batch.metadata[k].append(v)
                if batch.records >= self.batch_size:
                    batch.lines = np.asarray(batch.lines, dtype=np.int64)
                    yield batch
                    batch = None
            self._done = True
            if batch is not None:
                batch.lines = np.asarray(batch.lines, dtype=np.int64)
                yield batch
        finally:
            self.close()

    @contextlib.contextmanager
    def _gzip_errors(self) -> Iterator[None]:
        """A damaged compressed file is an error naming it, not a zlib traceback."""
        try:
            yield
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise MalformedInputError(
                f"{self.path}: not a complete gzip file ({e or 'it ends early'}); "
                "re-copy or re-compress it") from None

    def _guarded(self, rows: Iterator[tuple]) -> Iterator[tuple]:
        with self._gzip_errors():
            yield from rows

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()



def as_inputs(notes) -> list:
    """One notes input or several (a list or tuple of paths) as a list."""
    if isinstance(notes, (list, tuple)):
        if not notes:
            raise ValueError("no notes file given")
        return list(notes)
    return [notes]


def open_notes(notes, *args, **kwargs):
    """A `Reader` over one input, or `Readers` over several files read as one."""
    inputs = as_inputs(notes)
    if len(inputs) == 1:
        return Reader(inputs[0], *args, **kwargs)
    return Readers(inputs, *args, **kwargs)


class Readers:
    """Several note files read as one input, in the order given (MIMIC-IV-Note's
    discharge and radiology tables): every file's roles in the same columns, ids unique
    across the files (checked before a note is read: a duplicate is an error naming both
    files), rejects naming their file. Same interface as `Reader`."""

    def __init__(self, paths, text_col: str | None = None, id_col: str | None = None,
                 keep: list[str] | None = None, id_type: IdType | str = IdType.AUTO,
                 input_format: InputFormat | str | None = None, batch_size: int = 1024,
                 skip: int = 0, seen: IdSet | None = None, show_text: bool = False,
                 delimiter: str | None = None, columns=None, checked: bool = False):
        if any(is_table(p) for p in paths):
            raise ValueError("several inputs must all be files; concatenate tables first")
        self.paths = [Path(p) for p in paths]
        named = [str(p) for p in self.paths]
        again = {p for p in named if named.count(p) > 1}
        if again:
            raise SchemaError(f"{sorted(again)[0]} is given twice; give each notes file once")
        self._kw = dict(text_col=text_col, id_col=id_col, keep=keep, id_type=id_type,
                        input_format=input_format, batch_size=batch_size, delimiter=delimiter,
                        columns=columns)
        probes = [Reader(p, **self._kw) for p in self.paths]
        for p in probes:
            p.close()
        first = probes[0]
        for p in probes[1:]:
            if (p.columns.text, p.columns.id, p.columns.keep, p.columns.id_type) != (
                    first.columns.text, first.columns.id, first.columns.keep,
                    first.columns.id_type):
                raise SchemaError(
                    f"{p.path}: its columns ({p.columns.schema.describe()}) differ from "
                    f"{first.path}'s ({first.columns.schema.describe()}); give files of one "
                    "layout, or name the roles with --columns")
        self.columns = first.columns
        self.format = first.format
        self.formats = [p.format for p in probes]
        self.path = " + ".join(named)
        self.batch_size = batch_size
        self.skip = skip
        self.seen = IdSet() if seen is None else seen
        self.show_text = show_text
        self._sizes = [p.total_rows for p in probes]
        self._current: Reader | None = None
        self._finished = 0
        if not checked:  # `checked`: the caller's probe of the same files did it
            check_unique_ids(probes)

    @property
    def total_rows(self) -> int | None:
        return None if any(n is None for n in self._sizes) else sum(self._sizes)

    def progress(self) -> float:
        now = self._current.progress() if self._current is not None else 0.0
        return min((self._finished + now) / len(self.paths), 1.0)

    def __iter__(self) -> Iterator[RecordBatch]:
        remaining, start = self.skip, 0
        try:
            for path in self.paths:
                reader = Reader(path, **self._kw, skip=remaining, seen=self.seen,
                                show_text=self.show_text)
                self._current = reader
                for batch in reader:
                    batch.start += start
                    batch.numbers = [n + start for n in batch.numbers]
                    batch.rejects = [replace(r, file=str(path)) for r in batch.rejects]
                    yield batch
                consumed = reader._consumed
                remaining = max(0, remaining - consumed)
                start += consumed
                self._finished += 1
                self._current = None
        finally:
            self.close()

    def close(self) -> None:
        if self._current is not None:
            self._current.close()


def check_unique_ids(readers: list[Reader]) -> None:
    """Raise naming both files and the id where two files hold one note id."""
    if readers[0].columns.id is None:
        raise ValueError(f"{readers[0].path}: several files need an id column to tell their "
                         "notes apart (row numbers repeat); name it with --columns id=COLUMN")
    first: dict = {}
    for r in readers:
        for value in _ids_of(r):
            other = first.setdefault(value, r.path)
            if other != r.path:
                raise SchemaError(f"note id {value!r} is in both {other} and {r.path}; ids "
                                  "must be unique across the files of one index")


def _ids_of(reader: Reader) -> Iterator[str]:
    """A file's ids as stripped text, read with Arrow's parsers (the id column only)."""
    col, path = reader.columns.id, reader.path
    try:
        if reader.format is InputFormat.PARQUET:
            import pyarrow.parquet as pq

            values = pq.read_table(path, columns=[col]).column(0)
        elif reader.format in (InputFormat.CSV, InputFormat.TSV):
            import pyarrow.csv as pv

            values = pv.read_csv(path, parse_options=pv.ParseOptions(
                delimiter=reader.delimiter, newlines_in_values=True),
                convert_options=pv.ConvertOptions(include_columns=[col],
                                                  column_types={col: pa.string()})).column(0)
        else:
            raise pa.ArrowInvalid("read JSONL line by line")
        yield from (str(v).strip() for v in values.to_pylist() if v is not None)
        return
    except (pa.ArrowException, OSError, EOFError, zlib.error, gzip.BadGzipFile):
        pass  # the reader itself names what is wrong with the file, line by line
    reader = Reader(path, **{"text_col": reader.columns.text, "id_col": col,
                             "keep": [], "id_type": IdType.STR,
                             "input_format": reader.format, "delimiter": reader.delimiter})
    for batch in reader:
        yield from (str(i).strip() for i in batch.ids)
