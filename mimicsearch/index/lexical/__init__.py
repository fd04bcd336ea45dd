"""The lexical part of an index: BM25 over each note's whole text, as immutable segments.

Clinical notes carry exact rare terms (drug names, devices, lab values, de-id placeholders)
that lexical scoring catches and a truncated embedding misses. A commit that adds notes
writes a segment (writer.py) of their raw term counts; removals are the store's tombstones;
scores are computed at query time over the live notes of all segments (reader.py), equal to
a from-scratch BM25 of those notes; segments merge by a size rule (policy.py) or on
`mimicsearch compact` (merge.py), each merge one commit.

| module      | job |
|-------------|-----|
| analysis.py | the analyzer (bm25s tokenizer, English stopwords, Snowball stemmer) |
| segment.py  | one segment's arrays: write, open, merge |
| writer.py   | segments from notes streaming past, in bounded memory |
| reader.py   | BM25 over all segments and the live notes |
| policy.py   | which segments to merge (pure) |
| merge.py    | merging segments as commits |
"""
from .analysis import ANALYZER, analyze
from .reader import LexicalIndex, top_k
from .writer import SegmentWriter

__all__ = ["ANALYZER", "LexicalIndex", "SegmentWriter", "analyze", "top_k"]
