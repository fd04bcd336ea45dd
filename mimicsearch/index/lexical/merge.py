"""Merging lexical segments, each merge one commit of the index.

A merge reads the segments' postings (never the texts), drops tombstoned notes and writes
one segment over the same rows; the manifest then names it instead of them. Scores do not
change: they are computed over live notes whether or not the tombstoned ones are still in
a segment. A reader that opened the old state keeps its memory maps of the old files.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ...fileio import writer
from ..commit import commit, sweep_orphans
from ..manifest import IndexManifest
from ..store import MetadataStore
from .policy import compact_all, merges
from .segment import Segment, merge


def merge_segments(index_dir: Path, m: IndexManifest, live_rows,
                   rule: Callable = merges) -> tuple[IndexManifest, int]:
    """Apply `rule` (segments' notes, live notes -> runs to merge) to the index whose
    manifest is `m` and whose store's live mask is `live_rows`, one commit per run, last
    run first. Call under the writer lock. The new manifest and the merges made."""
    if m.lexical is None:
        return m, 0
    opened = [Segment.open(index_dir, s, verify=False) for s in m.lexical.segments]
    live = [live_rows[s.rows] for s in opened]
    runs = rule([s.documents for s in opened], [int(v.sum()) for v in live])
    for a, b in reversed(runs):
        inputs = [Segment.open(index_dir, s) for s in m.lexical.segments[a:b]]  # hashed
        merged = merge(inputs, live[a:b])
        records = m.lexical.segments
        new = () if merged.documents == 0 else (
            merged.save(index_dir, records[a].first_row, records[b - 1].end_row),)
        part = replace(m.lexical, segments=records[:a] + new + records[b:])
        m = commit(index_dir, m, m.with_(lexical=part))
    return m, len(runs)


def compact_rule(max_segments: int | None) -> Callable:
    """`compact`'s rule: everything into one segment, or down to `max_segments` with every
    tombstoned note dropped."""
    if max_segments is None or max_segments == 1:
        return compact_all
    return lambda docs, live: merges(docs, live, max_segments, deleted_share=0.0)


@writer("index_dir")
def compact_index(index_dir: str | Path, max_segments: int | None = None) -> dict:
    """Merge the lexical segments into one (or down to `max_segments`), dropping every
    tombstoned note from them; each merge is one commit. What was done, as a dict."""
    index_dir = Path(index_dir)
    m = IndexManifest.load(index_dir)
    if max_segments is not None and max_segments < 1:
        raise ValueError(f"--max-segments {max_segments}: give 1 or more")
    if m.lexical is None:
        raise ValueError(f"{index_dir} has no lexical part to compact (built with "
                         "--no-lexical or --no-full-text); nothing to do")
    sweep_orphans(index_dir, m)
    before = m.lexical
    live = MetadataStore.load(index_dir, m, verify=False).live
    new, runs = merge_segments(index_dir, m, live, compact_rule(max_segments))
    return {"segments_before": len(before.segments), "segments": len(new.lexical.segments),
            "documents_before": before.documents, "documents": new.lexical.documents,
            "merges": runs, "bytes": sum(f.size_bytes for f in new.lexical.refs())}
