"""The lexical part of an index: BM25 over each note's whole text, beside the FAISS shards.

Clinical notes carry exact rare terms (drug names, devices, lab values, de-id placeholders)
that lexical scoring catches and a truncated embedding misses. bm25s scores (Lucene's BM25,
k1 1.5, b 0.75) with English stopwords and the Snowball English stemmer (PyStemmer).

One document per live note (its first row: windows of a note share its text), numbered in
store order; `rows.npy` maps a document to its store row, so hits, filters and tombstones
use the same row ids as the dense part. BM25's IDF and average length depend on every
document, so the part is rebuilt from the stored texts inside each commit that changes the
notes (build, add, remove, sync): it always scores exactly the notes the index holds, and a
reader sees the dense and lexical parts of one commit together. Files are memory-mapped.

Beside bm25s's precomputed note scores the part keeps each term's raw counts per note and
each note's length (`TermCounts`): BM25 of a group of notes taken as one document (a
patient's history, `grouped_scores`) needs counts, which bm25s's scores no longer hold, and
summing counts at query time keeps it exact under any filter.
"""
from __future__ import annotations

import itertools
import json
import logging
import sys
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from ..fileio import mark_new
from .manifest import LEXICAL_COUNT_ROLES as COUNT_ROLES
from .manifest import LEXICAL_ROLES as ROLES
from .manifest import FileRef, IndexManifest, LexicalPart

ANALYZER = {"library": "bm25s", "method": "lucene", "k1": 1.5, "b": 0.75,
            "stopwords": "en", "stemmer": "english", "lower": True}
TOKENIZE_BLOCK = 2048  # notes tokenized at a time while building


def _tokenizer():
    import Stemmer
    from bm25s.tokenization import Tokenizer

    return Tokenizer(lower=ANALYZER["lower"], stopwords=ANALYZER["stopwords"],
                     stemmer=Stemmer.Stemmer(ANALYZER["stemmer"]))


def analyze(texts: Sequence[str]) -> list[list[str]]:
    """Texts as the stemmed terms BM25 matches on (the index's own analysis)."""
    return _tokenizer().tokenize(list(texts), return_as="string", show_progress=False)


def document_rows(store) -> np.ndarray:
    """Store rows that are documents: live notes' first rows, in store order."""
    keep = store.live.copy()
    if "window" in store.table.column_names:
        keep &= store.table.column("window").to_numpy(zero_copy_only=False) == 0
    return np.flatnonzero(keep)


def build_lexical(index_dir: str | Path, manifest: IndexManifest, store,
                  progress: bool = False) -> LexicalPart | None:
    """BM25 over the live notes of `manifest` (whose parts and tombstones are written);
    None where a live note has no stored text (`--no-full-text`): a lexical part that
    silently skipped notes would rank them last. `progress`: a bar over the notes
    tokenized, the long part (minutes at 500k notes)."""
    index_dir = Path(index_dir)
    rows = document_rows(store)
    starts = np.cumsum([0] + [p.rows for p in manifest.store_parts])
    tokenizer = _tokenizer()
    ids: list[list[int]] = []
    with tqdm(total=len(rows), desc="lexical index (BM25)", unit="note",
              disable=not progress, file=sys.stderr) as bar:
        for pi, part in enumerate(manifest.store_parts):
            mine = rows[(rows >= starts[pi]) & (rows < starts[pi + 1])] - starts[pi]
            if len(mine) == 0:
                continue
            if part.text is None:
                return None
            column = store.texts.part_column(pi).take(pa.array(mine))
            if column.null_count:
                return None
            texts = column.to_pylist()
            for s in range(0, len(texts), TOKENIZE_BLOCK):
                block = texts[s:s + TOKENIZE_BLOCK]
                ids += tokenizer.tokenize(block, update_vocab=True, return_as="ids",
                                          show_progress=False)
                bar.update(len(block))
    bm25 = _bm25(ids, tokenizer.get_vocab_dict())
    counts = TermCounts.of(ids, _vocab_size(bm25))
    prefix = f"lexical-{uuid.uuid4().hex[:12]}"
    names = {r: f"{prefix}.{n}" for r, n in (ROLES | COUNT_ROLES).items()}
    for name in names.values():
        mark_new(index_dir / name)
    try:
        with _quiet():
            bm25.save(str(index_dir), data_name=names["data"], indices_name=names["indices"],
                      indptr_name=names["indptr"], vocab_name=names["vocab"],
                      params_name=names["params"], show_progress=False)
        np.save(index_dir / names["rows"], rows.astype(np.int64))
        for role, array in counts.arrays().items():
            np.save(index_dir / names[role], array)
    except OSError as e:
        raise OSError(f"cannot write the lexical index into {index_dir}: {e.strerror or e}"
                      ) from None
    return LexicalPart({r: FileRef.of(index_dir, n) for r, n in names.items()}, len(rows),
                       dict(ANALYZER))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest scores, best first, ties in position order."""
    k = min(k, len(scores))
    if k == 0:
        return np.zeros(0, np.int64)
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.lexsort((top, -scores[top]))]


@dataclass(frozen=True)
class TermCounts:
    """Each term's postings with raw counts (term-major, CSC over documents x terms) and
    each document's length in analysed terms, as bm25s counts them."""

    indptr: np.ndarray  # int64 [terms + 1]: term t's postings are indptr[t]:indptr[t + 1]
    docs: np.ndarray  # int32 [postings], ascending within a term
    counts: np.ndarray  # int32 [postings]
    lengths: np.ndarray  # int32 [documents]

    @classmethod
    def of(cls, ids: list[list[int]], terms: int) -> TermCounts:
        from scipy import sparse

        lengths = np.fromiter(map(len, ids), np.int64, len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), np.int32, int(lengths.sum()))
        m = sparse.csr_matrix((np.ones(len(flat), np.int32), flat,
                               np.concatenate([[0], np.cumsum(lengths)])),
                              shape=(len(ids), terms)).tocsc()
        m.sum_duplicates()
        return cls(m.indptr.astype(np.int64), m.indices.astype(np.int32),
                   m.data.astype(np.int32), lengths.astype(np.int32))

    @classmethod
    def load(cls, index_dir: Path, names: dict, documents: int) -> TermCounts:
        arrays = {r: np.load(index_dir / names[r], mmap_mode="r") for r in COUNT_ROLES}
        c = cls(*(arrays[r] for r in COUNT_ROLES))
        if (len(c.lengths) != documents or len(c.docs) != len(c.counts)
                or int(c.indptr[-1]) != len(c.docs)):
            raise ValueError(f"{index_dir / names['term_indptr']}: the term counts do not "
                             f"match the {documents} notes the lexical part scores")
        return c

    def arrays(self) -> dict:
        return dict(zip(COUNT_ROLES, (self.indptr, self.docs, self.counts, self.lengths)))


def _vocab_size(bm25) -> int:
    return max(bm25.vocab_dict.values(), default=-1) + 1


def _bm25(ids: list[list[int]], vocab: dict):
    import bm25s

    bm25 = bm25s.BM25(k1=ANALYZER["k1"], b=ANALYZER["b"], method=ANALYZER["method"])
    with _quiet():
        bm25.index((ids, vocab), show_progress=False)
    return bm25


class LexicalIndex:
    """A loaded lexical part: BM25 scores of store rows for analysed queries."""

    def __init__(self, bm25, rows: np.ndarray, rows_total: int,
                 counts: TermCounts | None = None):
        self.bm25 = bm25
        self.counts = counts  # None: an index built before term counts were kept
        self.rows = rows  # document -> store row
        self.doc_of = np.full(rows_total, -1, dtype=np.int64)  # store row -> document
        self.doc_of[rows] = np.arange(len(rows))

    @classmethod
    def over(cls, texts: Sequence[str]) -> LexicalIndex:
        """In memory, over `texts` (row i = text i), analysed as an index's part is."""
        tokenizer = _tokenizer()
        ids = tokenizer.tokenize(list(texts), update_vocab=True, return_as="ids",
                                 show_progress=False)
        bm25 = _bm25(ids, tokenizer.get_vocab_dict())
        return cls(bm25, np.arange(len(texts)), len(texts),
                   TermCounts.of(ids, _vocab_size(bm25)))

    @classmethod
    def open(cls, index_dir: str | Path, part: LexicalPart, rows_total: int,
             verify: bool = True) -> LexicalIndex:
        import bm25s

        index_dir = Path(index_dir)
        if verify:
            for ref in part.refs():
                ref.verify(index_dir)
        names = {r: f.file for r, f in part.files.items()}
        params = json.loads((index_dir / names["params"]).read_text())
        if int(params.get("num_docs", -1)) != part.documents:
            raise ValueError(f"{index_dir / names['params']} scores {params.get('num_docs')} "
                             f"notes, the manifest says {part.documents}")
        bm25 = bm25s.BM25(**{k: params[k] for k in ("k1", "b", "method") if k in params})
        bm25.load_scores(str(index_dir), data_name=names["data"],
                         indices_name=names["indices"], indptr_name=names["indptr"],
                         num_docs=part.documents, mmap=True)
        bm25.vocab_dict = json.loads((index_dir / names["vocab"]).read_text())
        bm25.unique_token_ids_set = set(bm25.vocab_dict.values())
        bm25.nonoccurrence_array = None
        rows = np.load(index_dir / names["rows"])
        if len(rows) != part.documents or (len(rows) and rows.max() >= rows_total):
            raise ValueError(f"{index_dir / names['rows']} does not match the store")
        counts = TermCounts.load(index_dir, names, part.documents) if part.has_counts else None
        return cls(bm25, rows, rows_total, counts)

    def scores(self, terms: list[str], allowed: np.ndarray | None = None) -> np.ndarray:
        """BM25 score of every document for one analysed query (0 where nothing matches
        or `allowed`, a bool per store row, rejects its row)."""
        ids = self.bm25.get_tokens_ids(terms)
        if not ids:
            return np.zeros(len(self.rows), np.float32)
        s = self.bm25.get_scores_from_ids(ids)
        if allowed is not None:
            s = np.where(allowed[self.rows], s, 0).astype(np.float32)
        return s

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
        if self.counts is None:
            raise ValueError("this index's lexical part predates the term counts that "
                             "lexical patient search needs; rebuild it with `build-index` "
                             "(or `sync`) to rank patients by words")
        c = self.counts
        k1, b = float(self.bm25.k1), float(self.bm25.b)
        member = group >= 0
        lengths = np.bincount(group[member], weights=c.lengths[member], minlength=groups)
        out = np.zeros(groups)
        ids = np.unique([i for i in self.bm25.get_tokens_ids(terms) if i < len(c.indptr) - 1])
        if not groups or not len(ids):
            return out
        starts, ends = c.indptr[ids], c.indptr[ids + 1]
        take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
        term = np.repeat(np.arange(len(ids)), ends - starts)
        owner = group[c.docs[take]]
        inside = owner >= 0
        from scipy import sparse

        tf = sparse.csr_matrix((c.counts[take][inside].astype(np.float64),
                                (term[inside], owner[inside])), shape=(len(ids), groups))
        tf.sum_duplicates()
        df = np.diff(tf.indptr)
        idf = np.log1p((groups - df + 0.5) / (df + 0.5))
        norm = k1 * (1 - b + b * lengths / max(lengths.mean(), 1e-12))
        cols = tf.indices
        contrib = np.repeat(idf, df) * tf.data / (tf.data + norm[cols])
        return np.bincount(cols, weights=contrib, minlength=groups)

    def row_scores(self, terms: list[str], rows: np.ndarray) -> np.ndarray:
        """BM25 scores of given store rows (0 for rows that are not documents)."""
        s = self.scores(terms)
        docs = self.doc_of[np.asarray(rows, dtype=np.int64)]
        return np.where(docs >= 0, s[np.clip(docs, 0, None)], 0).astype(np.float32)


class _quiet:
    """bm25s logs and prints progress of its own; the commands print theirs."""

    def __enter__(self):
        self._level = logging.getLogger("bm25s").level
        logging.getLogger("bm25s").setLevel(logging.ERROR)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean length of no notes

    def __exit__(self, *exc):
        self._warnings.__exit__(*exc)
        logging.getLogger("bm25s").setLevel(self._level)
