"""The analysis BM25 matches on: bm25s's tokenizer, English stopwords, Snowball stemmer.

An index records `ANALYZER` in its manifest; every segment and every query go through the
same analysis, so a term means the same thing in each segment.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ANALYZER = {"library": "bm25s", "method": "lucene", "k1": 1.5, "b": 0.75,
            "stopwords": "en", "stemmer": "english", "lower": True}


def tokenizer():
    """A fresh bm25s tokenizer with the index's analysis (its vocabulary grows as it reads)."""
    import Stemmer
    from bm25s.tokenization import Tokenizer

    return Tokenizer(lower=ANALYZER["lower"], stopwords=ANALYZER["stopwords"],
                     stemmer=Stemmer.Stemmer(ANALYZER["stemmer"]))


def analyze(texts: Sequence[str]) -> list[list[str]]:
    """Texts as the stemmed terms BM25 matches on (the index's own analysis)."""
    return tokenizer().tokenize(list(texts), return_as="string", show_progress=False)


def term_ids(tok, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Texts as `tok`'s term ids end to end (int32) and each text's count of them. bm25s's
    tokenizer gives a text with no term one "" token; here it has none, as in Lucene and
    bm25s.tokenize, so it does not lengthen the average document."""
    docs = tok.tokenize(list(texts), update_vocab=True, return_as="ids", show_progress=False)
    empty = tok.get_vocab_dict().get("")
    if empty is not None:
        docs = [[i for i in d if i != empty] for d in docs]
    lengths = np.fromiter(map(len, docs), np.int64, len(docs))
    return np.fromiter((i for d in docs for i in d), np.int32, int(lengths.sum())), lengths
