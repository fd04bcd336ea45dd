"""One immutable lexical segment: the raw term counts of the notes of one row range.

A segment keeps what BM25 needs and nothing that depends on other notes: its sorted term
dictionary, each term's postings (document, count) and each document's length. IDF and
the average length are computed at query time over the live notes of every segment
(reader.py), so adding a segment or tombstoning a note never rewrites another segment.
Files are `.npy`, memory-mapped and hashed in the manifest.
"""
from __future__ import annotations

import functools
import itertools
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...fileio import mark_new
from ..manifest import SEGMENT_ROLES, FileRef, LexicalSegment


PREFIX = 8  # term bytes a lookup compares as one integer


@dataclass(frozen=True)
class Segment:
    """A segment's arrays (in memory or memory-mapped)."""

    terms: np.ndarray  # uint8: the sorted terms' UTF-8 bytes, end to end
    term_offsets: np.ndarray  # int64 [terms + 1]
    indptr: np.ndarray  # int64 [terms + 1]: term t's postings are indptr[t]:indptr[t + 1]
    docs: np.ndarray  # int32 [postings]: the segment's own document numbers, ascending per term
    counts: np.ndarray  # int32 [postings]: the term's count in that document
    lengths: np.ndarray  # int32 [documents]: analysed terms per document, as bm25s counts
    rows: np.ndarray  # int64 [documents]: each document's store row, ascending

    @property
    def documents(self) -> int:
        return len(self.lengths)

    @property
    def n_terms(self) -> int:
        return len(self.indptr) - 1

    def term(self, i: int) -> bytes:
        return self.terms[self.term_offsets[i]:self.term_offsets[i + 1]].tobytes()

    @functools.cached_property
    def _prefixes(self) -> np.ndarray:
        """Each term's first 8 bytes as a big-endian integer, zero-padded: sorted as the
        terms are, so a search of it narrows a lookup to the few terms sharing a prefix."""
        start, end = self.term_offsets[:-1], self.term_offsets[1:]
        out = np.zeros(self.n_terms, np.uint64)
        blob = np.asarray(self.terms)
        for j in range(PREFIX):
            at = start + j
            byte = blob[np.minimum(at, max(len(blob) - 1, 0))] if len(blob) else at * 0
            out = (out << np.uint64(8)) | np.where(at < end, byte, 0).astype(np.uint64)
        return out

    def lookup(self, term: bytes) -> int:
        """The term's number here, -1 where no document of the segment has it."""
        key = int.from_bytes(term[:PREFIX].ljust(PREFIX, b"\0"), "big")
        lo = int(np.searchsorted(self._prefixes, np.uint64(key), side="left"))
        hi = int(np.searchsorted(self._prefixes, np.uint64(key), side="right"))
        while lo < hi:
            mid = (lo + hi) // 2
            if self.term(mid) < term:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < self.n_terms and self.term(lo) == term else -1

    def postings(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.indptr[t]), int(self.indptr[t + 1])
        return self.docs[a:b], self.counts[a:b]

    def term_list(self) -> list[bytes]:
        blob, off = self.terms.tobytes(), self.term_offsets.tolist()
        return [blob[a:b] for a, b in itertools.pairwise(off)]

    def arrays(self) -> dict:
        return dict(zip(SEGMENT_ROLES, (self.terms, self.term_offsets, self.indptr, self.docs,
                                        self.counts, self.lengths, self.rows)))

    @classmethod
    def of_ids(cls, ids: list[np.ndarray], lengths: np.ndarray, vocab: dict,
               rows: np.ndarray) -> Segment:
        """From tokenized documents: `ids` the documents' term ids end to end (in blocks),
        `lengths` each document's count of them, `vocab` term -> id."""
        from scipy import sparse

        used = np.zeros(max(vocab.values(), default=-1) + 1, bool)
        flat = np.concatenate(ids) if ids else np.zeros(0, np.int32)
        used[flat] = True
        terms = sorted(t for t, i in vocab.items() if used[i])  # code point = UTF-8 order
        new = np.empty(max(vocab.values(), default=-1) + 1, np.int32)
        new[[vocab[t] for t in terms]] = np.arange(len(terms), dtype=np.int32)
        flat = new[flat]
        indptr = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        m = sparse.csr_matrix((np.ones(len(flat), np.int32), flat, indptr),
                              shape=(len(lengths), len(terms))).tocsc()
        m.sum_duplicates()
        return cls(*_dictionary([t.encode() for t in terms]), m.indptr.astype(np.int64), m.indices.astype(np.int32),
                   m.data.astype(np.int32), np.asarray(lengths, np.int32),
                   np.asarray(rows, np.int64))

    def save(self, index_dir: str | Path, first_row: int, end_row: int) -> LexicalSegment:
        """Write the segment's files (marked new: a killed commit leaves sweepable files)."""
        index_dir = Path(index_dir)
        prefix = f"lexical-{uuid.uuid4().hex[:12]}"
        files = {}
        try:
            for role, array in self.arrays().items():
                name = f"{prefix}.{role}.npy"
                np.save(mark_new(index_dir / name), np.ascontiguousarray(array))
                files[role] = FileRef.of(index_dir, name)
        except OSError as e:
            raise OSError(f"cannot write the lexical index into {index_dir}: "
                          f"{e.strerror or e}") from None
        return LexicalSegment(files, self.documents, first_row, end_row)

    @classmethod
    def open(cls, index_dir: str | Path, record: LexicalSegment,
             verify: bool = True) -> Segment:
        index_dir = Path(index_dir)
        arrays = {}
        for role in SEGMENT_ROLES:
            ref = record.files[role]
            path = ref.verify(index_dir) if verify else index_dir / ref.file
            arrays[role] = np.load(path, mmap_mode="r")
        s = cls(*(arrays[r] for r in SEGMENT_ROLES))
        if (s.documents != record.documents or len(s.rows) != s.documents
                or len(s.docs) != len(s.counts) or int(s.indptr[-1]) != len(s.docs)
                or len(s.term_offsets) != len(s.indptr)
                or int(s.term_offsets[-1]) != len(s.terms)
                or (s.documents and not record.first_row <= s.rows[0] <= s.rows[-1]
                    < record.end_row)):
            raise ValueError(f"{index_dir / record.files['rows'].file}: the lexical segment's "
                             f"arrays do not match its {record.documents} notes in the "
                             "manifest; rebuild the index with `build-index`")
        return s


def merge(segments: list[Segment], live: list[np.ndarray]) -> Segment:
    """One segment holding the live documents (`live[i]`, a bool per document of
    `segments[i]`) of adjacent segments, from their postings (no text is read again):
    terms united, documents renumbered in row order, tombstoned ones dropped."""
    lists = [s.term_list() for s in segments]
    terms = sorted(set(itertools.chain.from_iterable(lists)))
    number = {t: i for i, t in enumerate(terms)}
    keep_docs = [np.asarray(lv, bool) for lv in live]
    first = np.cumsum([0] + [int(k.sum()) for k in keep_docs])
    live_counts = []  # per segment: live postings of each of its terms
    for s, k in zip(segments, keep_docs):
        ok = k[np.asarray(s.docs)]
        live_counts.append(np.add.reduceat(ok.astype(np.int64), s.indptr[:-1])
                           if len(ok) else np.zeros(s.n_terms, np.int64))
        if len(ok):
            live_counts[-1][np.diff(s.indptr) == 0] = 0  # reduceat of an empty range
    per_term = np.zeros(len(terms), np.int64)
    maps = []
    for lst, c in zip(lists, live_counts):
        m = np.fromiter((number[t] for t in lst), np.int64, len(lst))
        maps.append(m)
        np.add.at(per_term, m, c)
    used = per_term > 0  # terms only tombstoned notes had leave the dictionary
    terms = [t for t, u in zip(terms, used.tolist()) if u]
    renumber_terms = np.cumsum(used) - 1
    maps = [renumber_terms[m] for m in maps]
    per_term = per_term[used]
    indptr = np.concatenate([[0], np.cumsum(per_term)])
    docs = np.empty(int(indptr[-1]), np.int32)
    counts = np.empty(int(indptr[-1]), np.int32)
    cursor = indptr[:-1].copy()
    for s, k, m, c, base in zip(segments, keep_docs, maps, live_counts, first):
        renumber = np.cumsum(k) - 1 + base
        sdocs = np.asarray(s.docs)
        ok = k[sdocs]
        used = c > 0  # terms whose postings here are all tombstoned have no place
        m, c = m[used], c[used]
        start = cursor[m]  # where each of this segment's terms continues in the output
        cursor[m] += c
        within = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
        at = np.repeat(start, c) + within
        docs[at] = renumber[sdocs[ok]]
        counts[at] = np.asarray(s.counts)[ok]
    return Segment(*_dictionary(terms), indptr.astype(np.int64), docs, counts,
                   np.concatenate([np.asarray(s.lengths)[k] for s, k in
                                   zip(segments, keep_docs)]).astype(np.int32),
                   np.concatenate([np.asarray(s.rows)[k] for s, k in
                                   zip(segments, keep_docs)]).astype(np.int64))


def _dictionary(terms: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted terms as one byte array and their offsets."""
    blob = np.frombuffer(b"".join(terms), np.uint8).copy()
    return blob, np.concatenate([[0], np.cumsum([len(t) for t in terms], dtype=np.int64)]
                                ).astype(np.int64)
