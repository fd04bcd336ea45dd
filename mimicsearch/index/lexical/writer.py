"""Writing segments while notes stream past: bounded memory whatever the corpus size.

A writer tokenizes the notes it is given in blocks and keeps only their term ids (numpy,
not Python lists); past `SEGMENT_NOTES` notes or `SEGMENT_TERMS` analysed terms it writes a
segment and starts the next, so building from a 2M-note corpus holds one segment's counts
at a time. Build pieces (local or on Spark executors) and `add`/`sync` commits each run one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..manifest import LexicalSegment
from .analysis import term_ids, tokenizer
from .segment import Segment

SEGMENT_NOTES = 250_000
SEGMENT_TERMS = 60_000_000  # about 240 MB of term ids, ~1 GB peak while a segment is written
TOKENIZE_BLOCK = 2048


class SegmentWriter:
    """Segments over notes given in store-row order; `add` texts with their store rows,
    then `finish` for the segments' manifest records (None if a note came without text:
    a lexical part that silently skipped notes would rank them last)."""

    def __init__(self, index_dir: str | Path, first_row: int,
                 notes: int = SEGMENT_NOTES, terms: int = SEGMENT_TERMS):
        self.dir = Path(index_dir)
        self.limits = (notes, terms)
        self.first_row = first_row  # where the open segment's row range starts
        self.segments: list[LexicalSegment] = []
        self.missing = False
        self._reset()

    def _reset(self) -> None:
        self._tok = tokenizer()
        self._ids: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self._notes = self._terms = 0

    def add(self, texts: list, rows: np.ndarray) -> None:
        if self.missing:
            return
        if any(t is None for t in texts):
            self.missing = True
            return
        for s in range(0, len(texts), TOKENIZE_BLOCK):
            flat, lengths = term_ids(self._tok, texts[s:s + TOKENIZE_BLOCK])
            self._ids.append(flat)
            self._lengths.append(lengths)
            self._rows.append(np.asarray(rows[s:s + TOKENIZE_BLOCK], np.int64))
            self._notes += len(lengths)
            self._terms += len(flat)
            if self._notes >= self.limits[0] or self._terms >= self.limits[1]:
                self._flush(int(self._rows[-1][-1]) + 1)

    def _flush(self, end_row: int) -> None:
        if self._notes:
            seg = Segment.of_ids(self._ids, np.concatenate(self._lengths),
                                 self._tok.get_vocab_dict(), np.concatenate(self._rows))
            self.segments.append(seg.save(self.dir, self.first_row, end_row))
            self.first_row = end_row
        self._reset()

    def finish(self, end_row: int) -> list[LexicalSegment] | None:
        """Close the last segment at `end_row` (the writer's row range ends there)."""
        if self.missing:
            return None
        self._flush(end_row)
        if self.segments:
            last = self.segments[-1]
            self.segments[-1] = LexicalSegment(last.files, last.documents, last.first_row,
                                               end_row)
        return self.segments
