"""The ids a run has accepted, to the line each came from: duplicate detection whose memory
does not grow with the corpus in Python objects.

A dict of ids costs about 100 bytes an id (a million notes: 100 MB; MIMIC's 2M: 200 MB), so a
long encode was bounded by its corpus, not its batch. Here recent ids sit in a small dict;
every `buffer` ids they are sorted into a numpy run (16 bytes an id: key, line), runs of like
size merge (log-structured, so an id is moved O(log n) times), and a run that reaches
`spill_rows` goes to a memory-mapped file in a private temporary directory, which the OS pages
in and out as needed, and is never merged again. String ids are keyed by a 128-bit BLAKE2b
digest (two int64, 24 bytes an id); two different ids collide with probability about
n^2 / 2^129, nil at any corpus size.

Measured with 5M string ids (bench/bench_idset.py): anonymous memory peaks at 48 MB (merges
included) at 1M, 3M and 5M ids alike; the price is one binary search per spilled run on each
lookup (16 runs at 5M ids: about 16 µs an id).
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .fileio import mark_new


class _Run:
    """Sorted keys (and a second key word for string ids) with the line of each."""

    def __init__(self, keys: np.ndarray, check: np.ndarray | None, lines: np.ndarray,
                 spilled: bool = False):
        self.keys, self.check, self.lines, self.spilled = keys, check, lines, spilled

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, key: int, check: int) -> int | None:
        i = int(np.searchsorted(self.keys, key))
        while i < len(self.keys) and self.keys[i] == key:
            if self.check is None or self.check[i] == check:
                return int(self.lines[i])
            i += 1
        return None


class IdSet:
    """Mapping-like: `get(id)` -> first line or None, `ids[id] = line`, `update(ids, lines)`.

    Ids are all ints (int64 range, which the Reader checks) or all strings. Spilled runs go
    to a `.ids-*` directory under `spill_dir` (default: the system's temporary directory,
    which may be RAM-backed tmpfs; `encode` puts them beside its output).
    """

    def __init__(self, buffer: int = 1 << 16, spill_rows: int = 1 << 18,
                 spill_dir: str | Path | None = None):
        self.buffer, self.spill_rows, self.spill_dir = buffer, spill_rows, spill_dir
        self._recent: dict = {}
        self._runs: list[_Run] = []
        self._strings: bool | None = None
        self._tmp: Path | None = None
        self._files = 0

    def __len__(self) -> int:
        return len(self._recent) + sum(len(r) for r in self._runs)

    def __contains__(self, id_) -> bool:
        return self.get(id_) is not None

    def get(self, id_, default=None):
        line = self._recent.get(id_)
        if line is not None:
            return line
        if self._runs:
            key, check = self._key(id_)
            for run in self._runs:
                line = run.find(key, check)
                if line is not None:
                    return line
        return default

    def __setitem__(self, id_, line: int) -> None:
        self._kind(id_)
        self._recent[id_] = line
        if len(self._recent) >= self.buffer:
            self._flush()

    def update(self, ids: Iterable, lines: Iterable[int]) -> None:
        for id_, line in zip(ids, lines):
            self[id_] = line

    def nbytes(self) -> int:
        """Bytes held in RAM by the runs (memory-mapped runs count 0)."""
        return sum(a.nbytes for r in self._runs for a in (r.keys, r.check, r.lines)
                   if a is not None and not isinstance(a, np.memmap))

    def close(self) -> None:
        self._runs, self._recent = [], {}
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __del__(self):
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _kind(self, id_) -> None:
        strings = isinstance(id_, str)
        if self._strings is None:
            self._strings = strings
        elif strings != self._strings:
            raise TypeError(f"id {id_!r}: ids of one run are all integers or all strings")

    def _key(self, id_) -> tuple[int, int]:
        if not self._strings:
            return int(id_), 0
        digest = hashlib.blake2b(id_.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        return (int.from_bytes(digest[:8], "little", signed=True),
                int.from_bytes(digest[8:], "little", signed=True))

    def _flush(self) -> None:
        pairs = [self._key(i) for i in self._recent]
        keys = np.fromiter((k for k, _ in pairs), dtype=np.int64, count=len(pairs))
        check = (np.fromiter((c for _, c in pairs), dtype=np.int64, count=len(pairs))
                 if self._strings else None)
        lines = np.fromiter(self._recent.values(), dtype=np.int64, count=len(pairs))
        self._recent = {}
        self._runs.append(self._sorted(keys, check, lines))
        while (len(self._runs) > 1 and not self._runs[-2].spilled
               and len(self._runs[-2]) <= 2 * len(self._runs[-1])):
            b, a = self._runs.pop(), self._runs.pop()
            self._runs.append(self._sorted(
                np.concatenate([a.keys, b.keys]),
                None if a.check is None else np.concatenate([a.check, b.check]),
                np.concatenate([a.lines, b.lines])))

    def _sorted(self, keys, check, lines) -> _Run:
        order = np.argsort(keys, kind="stable")
        run = _Run(keys[order], None if check is None else check[order], lines[order])
        return self._spill(run) if len(run) >= self.spill_rows else run

    def _spill(self, run: _Run) -> _Run:
        if self._tmp is None:
            if self.spill_dir is None:
                self._tmp = Path(tempfile.mkdtemp(prefix=".ids-"))
            else:  # beside a writer's output: marked, so a killed run's copy can be swept
                self._tmp = mark_new(Path(self.spill_dir) / f".ids-{uuid.uuid4().hex[:12]}")
                self._tmp.mkdir()
        arrays = []
        for a in (run.keys, run.check, run.lines):
            if a is None:
                arrays.append(None)
                continue
            self._files += 1
            path = self._tmp / f"run-{self._files}.npy"
            np.save(path, a)
            arrays.append(np.load(path, mmap_mode="r"))
        return _Run(*arrays, spilled=True)
