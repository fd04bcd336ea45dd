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
"""
from __future__ import annotations

import json
import logging
import sys
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from ..fileio import mark_new
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
    prefix = f"lexical-{uuid.uuid4().hex[:12]}"
    names = {r: f"{prefix}.{n}" for r, n in ROLES.items()}
    for name in names.values():
        mark_new(index_dir / name)
    try:
        with _quiet():
            bm25.save(str(index_dir), data_name=names["data"], indices_name=names["indices"],
                      indptr_name=names["indptr"], vocab_name=names["vocab"],
                      params_name=names["params"], show_progress=False)
        np.save(index_dir / names["rows"], rows.astype(np.int64))
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


def _bm25(ids: list[list[int]], vocab: dict):
    import bm25s

    bm25 = bm25s.BM25(k1=ANALYZER["k1"], b=ANALYZER["b"], method=ANALYZER["method"])
    with _quiet():
        bm25.index((ids, vocab), show_progress=False)
    return bm25


class LexicalIndex:
    """A loaded lexical part: BM25 scores of store rows for analysed queries."""

    def __init__(self, bm25, rows: np.ndarray, rows_total: int):
        self.bm25 = bm25
        self.rows = rows  # document -> store row
        self.doc_of = np.full(rows_total, -1, dtype=np.int64)  # store row -> document
        self.doc_of[rows] = np.arange(len(rows))

    @classmethod
    def over(cls, texts: Sequence[str]) -> LexicalIndex:
        """In memory, over `texts` (row i = text i), analysed as an index's part is."""
        tokenizer = _tokenizer()
        ids = tokenizer.tokenize(list(texts), update_vocab=True, return_as="ids",
                                 show_progress=False)
        return cls(_bm25(ids, tokenizer.get_vocab_dict()), np.arange(len(texts)), len(texts))

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
        return cls(bm25, rows, rows_total)

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
