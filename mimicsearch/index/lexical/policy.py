"""Which lexical segments to merge: a pure function of their sizes, no file I/O.

Every `add`/`sync` commit writes one segment, so a nightly job grows the count by one a
night. After a commit, segments are merged when either
- more than `MAX_SEGMENTS` exist: the adjacent pair with the fewest live notes together is
  merged, again until `MAX_SEGMENTS` remain (small nightly segments merge with each other
  long before a build's large ones are touched, as in Lucene's tiered policy), or
- more than `DELETED_SHARE` of a segment's notes are tombstoned: it is rewritten without
  them (their postings cost query time and disk while counting for nothing).
Each merge is one commit. `mimicsearch compact INDEX` merges everything into one segment.
"""
from __future__ import annotations

from collections.abc import Sequence

MAX_SEGMENTS = 16
DELETED_SHARE = 0.3


def merges(documents: Sequence[int], live: Sequence[int], max_segments: int | None = None,
           deleted_share: float | None = None) -> list[tuple[int, int]]:
    """Runs [start, end) of adjacent segments to merge, in order, not overlapping;
    `documents[i]` and `live[i]` are segment i's notes and live notes. None: the module's
    thresholds."""
    max_segments = MAX_SEGMENTS if max_segments is None else max_segments
    deleted_share = DELETED_SHARE if deleted_share is None else deleted_share
    if max_segments < 1:
        raise ValueError(f"max_segments={max_segments}: must be at least 1")
    groups = [[i] for i in range(len(documents))]
    sizes = [int(n) for n in live]
    while len(groups) > max_segments:
        j = min(range(len(groups) - 1), key=lambda i: (sizes[i] + sizes[i + 1], i))
        groups[j:j + 2] = [groups[j] + groups[j + 1]]
        sizes[j:j + 2] = [sizes[j] + sizes[j + 1]]
    return [(g[0], g[-1] + 1) for g in groups
            if len(g) > 1 or documents[g[0]] - live[g[0]] > deleted_share * documents[g[0]]]


def compact_all(documents: Sequence[int], live: Sequence[int]) -> list[tuple[int, int]]:
    """One run over every segment, unless that is already one segment with no tombstone."""
    if not documents or (len(documents) == 1 and documents[0] == live[0]):
        return []
    return [(0, len(documents))]
