"""Whole note texts beside the store: what a note view shows, read by row on demand.

One Arrow IPC file per store part (`store/part-*.text.arrow`, a `text` column, row for row
with the part), written in fixed batches of BATCH_ROWS compressed rows and memory-mapped on
read: a lookup decompresses one batch, so a server's memory stays flat however long the
notes are. Notes indexed without their text (or before texts were kept) read as None.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import numpy as np
import pyarrow as pa

from ..embeddings import FULL_TEXT
from ..fileio import atomic_path
from .manifest import FileRef, StorePart

BATCH_ROWS = 64


class TextsWriter:
    """A texts file written as texts stream past, re-cut into batches of BATCH_ROWS (the
    reader finds a row's batch by division); `ref` once closed without error."""

    SCHEMA = pa.schema([pa.field(FULL_TEXT, pa.string())])

    def __init__(self, index_dir: str | Path, name: str):
        self.dir, self.name, self.ref = Path(index_dir), name, None
        self._path = atomic_path(self.dir / name, new=True)
        tmp = self._path.__enter__()
        self._writer = pa.ipc.new_file(str(tmp), self.SCHEMA,
                                       options=pa.ipc.IpcWriteOptions(compression="zstd"))
        self._pending: list = []
        self._held = 0

    def add(self, column) -> None:
        column = column.cast(pa.string())
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        self._pending += chunks
        self._held += len(column)
        if self._held >= BATCH_ROWS:
            table = pa.Table.from_batches(
                [pa.record_batch([c], schema=self.SCHEMA) for c in self._pending],
                self.SCHEMA).combine_chunks()
            full = (self._held // BATCH_ROWS) * BATCH_ROWS
            for start in range(0, full, BATCH_ROWS):
                self._writer.write_table(table.slice(start, BATCH_ROWS),
                                         max_chunksize=BATCH_ROWS)
            rest = table.slice(full).column(0).combine_chunks()
            self._pending, self._held = ([rest] if len(rest) else []), len(rest)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None and self._held:
                self._writer.write_table(pa.Table.from_batches(
                    [pa.record_batch([c], schema=self.SCHEMA) for c in self._pending],
                    self.SCHEMA).combine_chunks(), max_chunksize=BATCH_ROWS)
            self._writer.close()
        finally:
            self._path.__exit__(*exc)
        if exc[0] is None:
            self.ref = FileRef.of(self.dir, self.name)


class NoteTexts:
    """Texts of store rows across parts; `get(rows)` is a list of str or None."""

    def __init__(self, starts: np.ndarray, paths: list[Path | None]):
        self._starts = starts  # first row of each part, and the end
        self._paths = paths
        self._readers: dict[int, pa.ipc.RecordBatchFileReader] = {}
        self._lock = threading.Lock()

    @classmethod
    def empty(cls, rows: int) -> NoteTexts:
        return cls(np.array([0, rows], dtype=np.int64), [None])

    @classmethod
    def open(cls, index_dir: str | Path, parts: Sequence[StorePart],
             verify: bool = True) -> NoteTexts:
        starts = np.cumsum([0] + [p.rows for p in parts]).astype(np.int64)
        paths = [None if p.text is None else
                 p.text.verify(index_dir) if verify else Path(index_dir) / p.text.file
                 for p in parts]
        return cls(starts, paths)

    @property
    def kept(self) -> bool:
        """Whether any part holds texts."""
        return any(p is not None for p in self._paths)

    def get(self, rows: Sequence[int]) -> list[str | None]:
        out: list[str | None] = []
        for row in rows:
            part = int(np.searchsorted(self._starts, row, side="right")) - 1
            if not 0 <= part < len(self._paths) or self._paths[part] is None:
                out.append(None)
                continue
            local = int(row) - int(self._starts[part])
            with self._lock:
                batch = self._reader(part).get_batch(local // BATCH_ROWS)
            out.append(batch.column(0)[local % BATCH_ROWS].as_py())
        return out

    def part_column(self, part: int) -> pa.ChunkedArray:
        """Every text of store part `part` (its position in the manifest)."""
        if self._paths[part] is None:
            return pa.chunked_array([pa.nulls(int(self._starts[part + 1] - self._starts[part]),
                                              pa.string())])
        with self._lock:
            return self._reader(part).read_all().column(0)

    def _reader(self, part: int) -> pa.ipc.RecordBatchFileReader:
        if part not in self._readers:
            reader = pa.ipc.open_file(pa.memory_map(str(self._paths[part])))
            if reader.schema.names != [FULL_TEXT]:
                raise ValueError(f"{self._paths[part]} is not a texts file (columns "
                                 f"{reader.schema.names})")
            self._readers[part] = reader
        return self._readers[part]
