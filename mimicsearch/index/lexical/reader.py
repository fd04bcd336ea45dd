"""The lexical index over all segments: BM25 of the live notes, computed at query time.

Documents are numbered segment after segment; `rows` maps a document to its store row, so
hits, filters and tombstones use the dense part's row ids. Each query term's document
frequency, the live note count and the average length are summed over the live documents
of every segment, so a score is exactly the score a from-scratch BM25 over the live notes
gives (Lucene's formula, as bm25s's "lucene" method computes it): tombstoned notes count
for nothing even before a merge drops them.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..manifest import LexicalPart
from .analysis import ANALYZER, term_ids, tokenizer
from .segment import Segment


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest scores, best first, ties in position order."""
    k = min(k, len(scores))
    if k == 0:
        return np.zeros(0, np.int64)
    kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
    above = np.flatnonzero(scores > kth)
    tied = np.flatnonzero(scores == kth)[:k - len(above)]  # the cut keeps the first ties
    top = np.concatenate([above, tied])
    return top[np.lexsort((top, -scores[top]))]


class LexicalIndex:
    """BM25 scores of store rows for analysed queries, over segments and a live mask."""

    def __init__(self, segments: Sequence[Segment], live_rows: np.ndarray,
                 k1: float = ANALYZER["k1"], b: float = ANALYZER["b"]):
        self.segments = list(segments)
        self.k1, self.b = float(k1), float(b)
        self.offsets = np.cumsum([0] + [s.documents for s in self.segments])
        self.rows = (np.concatenate([np.asarray(s.rows) for s in self.segments])
                     if self.segments else np.zeros(0, np.int64))
        self.doc_of = np.full(len(live_rows), -1, dtype=np.int64)  # store row -> document
        self.doc_of[self.rows] = np.arange(len(self.rows))
        self.live = np.asarray(live_rows, bool)[self.rows]  # per document
        lengths = (np.concatenate([np.asarray(s.lengths) for s in self.segments])
                   if self.segments else np.zeros(0, np.int32)).astype(np.float64)
        self.lengths = lengths
        self.n_live = int(self.live.sum())
        avg = (lengths[self.live].sum() / self.n_live if self.n_live else 0.0) or 1.0
        self._norm = self.k1 * (1 - self.b + self.b * lengths / avg)
        self._all_live = [bool(self.live[a:b].all())
                          for a, b in zip(self.offsets[:-1], self.offsets[1:])]
        self._last = None  # (terms, _weighted(terms)) of the last query

    @property
    def documents(self) -> int:
        return len(self.rows)

    @classmethod
    def over(cls, texts: Sequence[str]) -> LexicalIndex:
        """In memory, over `texts` (row i = text i), analysed as an index's part is."""
        tok = tokenizer()
        flat, lengths = term_ids(tok, texts)
        seg = Segment.of_ids([flat], lengths, tok.get_vocab_dict(), np.arange(len(texts)))
        return cls([seg], np.ones(len(texts), bool))

    @classmethod
    def open(cls, index_dir: str | Path, part: LexicalPart, live_rows: np.ndarray,
             verify: bool = True) -> LexicalIndex:
        """The part's segments memory-mapped; `live_rows` the store's live mask."""
        segments = [Segment.open(index_dir, s, verify) for s in part.segments]
        return cls(segments, live_rows, part.analyzer.get("k1", ANALYZER["k1"]),
                   part.analyzer.get("b", ANALYZER["b"]))

    def _live_postings(self, term: str) -> tuple[list, int]:
        """One analysed term's live postings per segment, [(segment, documents local to
        it, counts)], and its document frequency over the live notes."""
        key = term.encode()
        parts, df = [], 0
        for i, s in enumerate(self.segments):
            t = s.lookup(key)
            if t < 0:
                continue
            d, c = s.postings(t)
            if not self._all_live[i]:
                ok = self.live[self.offsets[i] + d]
                d, c = d[ok], c[ok]
            if len(d):
                parts.append((i, d, c))
                df += len(d)
        return parts, df

    def postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """(documents, counts) of one analysed term's live notes over every segment."""
        parts, _ = self._live_postings(term)
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int32)
        return (np.concatenate([self.offsets[i] + d.astype(np.int64) for i, d, _ in parts]),
                np.concatenate([c for _, _, c in parts]))

    def _idf(self, df, n) -> np.ndarray:
        return np.log1p((n - df + 0.5) / (df + 0.5))

    def _weighted(self, terms: list[str]) -> list:
        """(IDF times the query's count of it, live postings per segment) of each distinct
        term a live note has: a term given twice counts twice, as in bm25s. The last
        query's are kept: a hybrid search asks again for the notes one list missed."""
        key = tuple(terms)
        last = self._last  # one read: another thread may replace it
        if last is not None and last[0] == key:
            return last[1]
        out = []
        for term, times in Counter(terms).items():
            parts, df = self._live_postings(term)
            if df:
                out.append((times * self._idf(df, self.n_live), parts))
        self._last = (key, out)
        return out

    def scores(self, terms: list[str], allowed: np.ndarray | None = None) -> np.ndarray:
        """BM25 score of every document for one analysed query (0 where nothing matches,
        for tombstoned notes, or where `allowed`, a bool per store row, rejects its row).
        A term given twice counts twice, as in bm25s."""
        out = np.zeros(len(self.rows), np.float64)
        for w, parts in self._weighted(terms):
            for i, d, c in parts:
                docs = self.offsets[i] + d
                tf = c.astype(np.float64)
                out[docs] += w * tf / (tf + self._norm[docs])
        if allowed is not None:
            out[~allowed[self.rows]] = 0
        return out.astype(np.float32)

    def row_scores(self, terms: list[str], rows: np.ndarray) -> np.ndarray:
        """BM25 scores of given store rows (0 for rows that are not documents), reading
        only those rows' postings entries once each term's frequency is known."""
        docs = self.doc_of[np.asarray(rows, dtype=np.int64)]
        out = np.zeros(len(docs), np.float64)
        valid = np.flatnonzero(docs >= 0)
        if not len(valid):
            return out.astype(np.float32)
        wanted = docs[valid]
        seg_of = np.searchsorted(self.offsets, wanted, side="right") - 1
        for w, parts in self._weighted(terms):
            for i, d, c in parts:
                mine = np.flatnonzero(seg_of == i)
                if not len(mine):
                    continue
                local = wanted[mine] - self.offsets[i]
                at = np.minimum(np.searchsorted(d, local), len(d) - 1)
                hit = d[at] == local
                tf = np.asarray(c[at[hit]], np.float64)
                out[valid[mine[hit]]] += w * tf / (tf + self._norm[wanted[mine[hit]]])
        return out.astype(np.float32)

    def search(self, terms: list[str], k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, store rows) of one analysed query, best first; documents that
        match no term are not hits, so fewer than k may come back."""
        s = self.scores(terms, allowed)
        top = top_k(s, k)
        top = top[s[top] > 0]
        return s[top], self.rows[top]

    def grouped_scores(self, terms: list[str], group: np.ndarray, groups: int) -> np.ndarray:
        """BM25 of `groups` documents, each the notes `group` (an int per document: its
        group, -1 for none) puts in it taken as one text: counts and lengths summed over
        the group, IDF and average length over the groups, each distinct query term once.
        Exactly what bm25s gives indexing the groups' joined texts."""
        member = (group >= 0) & self.live
        lengths = np.bincount(group[member], weights=self.lengths[member], minlength=groups)
        out = np.zeros(groups)
        if not groups:
            return out
        norm = self.k1 * (1 - self.b + self.b * lengths / max(lengths.mean(), 1e-12))
        for term in dict.fromkeys(terms):
            docs, tf = self.postings(term)
            owner = group[docs]
            inside = owner >= 0
            if not inside.any():
                continue
            tf = np.bincount(owner[inside], weights=tf[inside], minlength=groups)
            hit = np.flatnonzero(tf)
            idf = self._idf(len(hit), groups)
            out[hit] += idf * tf[hit] / (tf[hit] + norm[hit])
        return out
