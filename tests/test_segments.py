"""The lexical part as segments: every add/edit writes one, removals are tombstones, merges
drop them, and BM25 over all segments always equals a from-scratch BM25 of the live notes.
Real indexes on disk, real bm25s analysis, real files; kill -9 at each commit point."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from fixtures.server import mimicsearch
from fixtures.vectors import unit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_lexical import bm25_brute

from mimicsearch.index import (
    ArraySource,
    BuildOptions,
    apply_changes,
    build_index,
    compact_index,
    open_index,
)
from mimicsearch.index.lexical import LexicalIndex, SegmentWriter, analyze, policy
from mimicsearch.index.lexical.segment import Segment, merge
from mimicsearch.index.manifest import IndexManifest

WORDS = ["heparin", "warfarin", "insulin", "sepsis", "stent", "effusion", "troponin",
         "lactate", "fracture", "catheter", "embolism", "pneumonia"]
FILLER = ["the", "patient", "was", "seen", "today", "with", "family", "and", "stable"]
QUERIES = ["heparin sepsis", "stent troponin troponin", "pneumonia effusion catheter",
           "the patient"]
DIM = 8


def note_text(rng) -> str:
    words = list(rng.choice(WORDS, size=int(rng.integers(0, 5)))) + list(
        rng.choice(FILLER, size=int(rng.integers(0, 12))))
    rng.shuffle(words)
    return " ".join(words)  # some notes have no term at all (bm25s's empty document)


def notes(ids, rng):
    texts = [note_text(rng) for _ in ids]
    meta = pa.table({"id": pa.array(ids, pa.int64()),
                     "SUBJECT_ID": [str(100 + i % 5) for i in ids],
                     "CATEGORY": [("Nursing", "Radiology")[i % 2] for i in ids], "TEXT": texts})
    return unit(rng.standard_normal((len(ids), DIM))), meta, texts


def fresh_answers(live: dict) -> dict:
    """Top-50 (ids, scores) per query of a from-scratch BM25 over the live notes, in
    index order."""
    ids = list(live)
    fresh = LexicalIndex.over([live[i] for i in ids])
    out = {}
    for q, terms in zip(QUERIES, analyze(QUERIES)):
        scores, rows = fresh.search(terms, 50)
        out[q] = ([ids[r] for r in rows], scores.tolist())
    return out


def index_answers(ix) -> dict:
    index = open_index(ix)
    id_col = index.store.table.column("id").to_numpy()
    out = {}
    for q, terms in zip(QUERIES, analyze(QUERIES)):
        scores, rows = index.lexical.search(terms, 50)
        out[q] = ([int(i) for i in id_col[rows]], scores.tolist())
    return out


def files_are_exactly_the_manifests(ix):
    m = IndexManifest.load(ix)
    named = {f.file for f in m.files()}
    on_disk = {str(p.relative_to(ix)) for p in ix.rglob("*") if p.is_file()
               and not p.name.startswith(".") and p.name != "manifest.json"}
    assert on_disk == named, on_disk ^ named


def build(ix, live: dict, rng, shard_size=None):
    ids = sorted(live)
    x, meta, texts = notes(ids, rng)
    live.update(zip(ids, texts))
    build_index(ArraySource(x, meta), ix, model_fingerprint="f", progress=False,
                options=BuildOptions(index_key="Flat", shard_size=shard_size))


OPS = st.lists(st.tuples(st.sampled_from(["add", "edit", "remove", "compact"]),
                         st.integers(1, 12)), min_size=1, max_size=7)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, seed=st.integers(0, 2**16), shard=st.sampled_from([None, 7]))
def test_segment_bm25_equals_a_from_scratch_bm25_through_any_changes(tmp_path_factory, ops,
                                                                      seed, shard):
    """Random add/edit/remove/compact sequences (with auto-merges past 3 segments): after
    each commit the top-50 lexical ids and scores equal a fresh BM25 over the live notes,
    and the directory holds exactly the manifest's files."""
    rng = np.random.default_rng(seed)
    ix = tmp_path_factory.mktemp("seg") / "ix"
    live: dict = dict.fromkeys(range(15))
    build(ix, live, rng, shard)
    next_id = 15
    keep = policy.MAX_SEGMENTS
    policy.MAX_SEGMENTS = 3
    try:
        for op, n in ops:
            if op == "add":
                ids = list(range(next_id, next_id + n))
                next_id += n
                x, meta, texts = notes(ids, rng)
                apply_changes(index_dir=ix, vectors=x, metadata=meta)
                live.update(zip(ids, texts))
            elif op == "edit" and live:
                ids = sorted(rng.choice(sorted(live), size=min(n, len(live)), replace=False))
                x, meta, texts = notes([int(i) for i in ids], rng)
                apply_changes(index_dir=ix, vectors=x, metadata=meta, remove_ids=ids)
                for i in ids:
                    del live[i]  # an edited note moves to the end of store order
                live.update(zip([int(i) for i in ids], texts))
            elif op == "remove" and len(live) > 1:
                ids = sorted(rng.choice(sorted(live), size=min(n, len(live) - 1),
                                        replace=False))
                apply_changes(index_dir=ix, remove_ids=[int(i) for i in ids])
                for i in ids:
                    del live[i]
            elif op == "compact":
                compact_index(ix)
                assert len(IndexManifest.load(ix).lexical.segments) == 1
            m = IndexManifest.load(ix)
            assert len(m.lexical.segments) <= 3 or op == "remove"
            assert index_answers(ix) == fresh_answers(live), (op, n)
            files_are_exactly_the_manifests(ix)
    finally:
        policy.MAX_SEGMENTS = keep


def test_scores_across_segments_and_tombstones_equal_bm25s(tmp_path):
    """The reference is bm25s itself, indexing only the live notes."""
    rng = np.random.default_rng(1)
    live = dict.fromkeys(range(60))
    build(tmp_path / "ix", live, rng, shard_size=13)
    assert len(IndexManifest.load(tmp_path / "ix").lexical.segments) == 5
    gone = [3, 14, 15, 40, 59]
    apply_changes(index_dir=tmp_path / "ix", remove_ids=gone)
    for i in gone:
        del live[i]
    index = open_index(tmp_path / "ix")
    ids = np.array(sorted(live))
    for q, terms in zip(QUERIES, analyze(QUERIES)):
        ref = bm25_brute([live[i] for i in ids], q)
        scores = index.lexical.row_scores(terms, ids)  # rows == ids: nothing was edited
        np.testing.assert_allclose(scores, ref, rtol=1e-5, atol=1e-7)
        dead = index.lexical.row_scores(terms, np.array(gone))
        assert not dead.any()
        every = index.lexical.scores(terms)
        rows = np.random.default_rng(0).permutation(60)[:25]
        docs = index.lexical.doc_of[rows]
        assert index.lexical.row_scores(terms, rows).tolist() == np.where(
            docs >= 0, every[docs], 0).tolist()  # the fusion's exact scorer, bit for bit


def test_a_merge_equals_a_segment_written_from_the_live_notes(tmp_path):
    """Merging drops tombstoned notes and their now-unused terms: the merged arrays are the
    arrays of a segment written from scratch over the live notes, byte for byte."""
    rng = np.random.default_rng(2)
    texts = [note_text(rng) for _ in range(40)] + ["zzzonly here"]
    rows = np.arange(41)
    writer = SegmentWriter(tmp_path, 0, notes=10)
    for s in range(0, 41, 3):
        writer.add(texts[s:s + 3], rows[s:s + 3])
    records = writer.finish(41)
    assert len(records) == 4 and records[-1].end_row == 41
    assert [r.first_row for r in records] == [0, 12, 24, 36]
    segments = [Segment.open(tmp_path, r) for r in records]
    alive = np.ones(41, bool)
    alive[[0, 5, 17, 40]] = False
    merged = merge(segments, [alive[s.rows] for s in segments])
    fresh = SegmentWriter(tmp_path / "fresh", 0)
    keep = np.flatnonzero(alive)
    fresh.add([texts[i] for i in keep], keep)
    want = Segment.open(tmp_path / "fresh", fresh.finish(41)[0])
    for role, array in want.arrays().items():
        np.testing.assert_array_equal(merged.arrays()[role], array, err_msg=role)
    only = analyze(["zzzonly"])[0][0].encode()
    assert merged.lookup(only) == -1 and want.lookup(only) == -1
    assert segments[-1].lookup(only) >= 0


def test_the_merge_policy():
    assert policy.merges([100] * 4, [100] * 4, max_segments=4) == []
    # past the limit, the smallest neighbours merge first, big build segments last
    assert policy.merges([1000, 1000, 20, 20, 30], [1000, 1000, 20, 20, 30],
                         max_segments=3) == [(2, 5)]
    assert policy.merges([1000, 10, 1000, 10], [1000, 10, 1000, 10],
                         max_segments=3) == [(0, 2)]
    # a third of a segment tombstoned: rewritten alone
    assert policy.merges([90, 90], [90, 50], max_segments=4) == [(1, 2)]
    assert policy.merges([90, 90], [90, 70], max_segments=4) == []
    assert policy.compact_all([5], [5]) == [] and policy.compact_all([5], [4]) == [(0, 1)]
    assert policy.compact_all([5, 5], [5, 5]) == [(0, 2)]
    with pytest.raises(ValueError, match="at least 1"):
        policy.merges([1], [1], max_segments=0)


def test_compact_command_keeps_answers_and_a_reader_across_it(tmp_path):
    rng = np.random.default_rng(3)
    ix = tmp_path / "ix"
    live = dict.fromkeys(range(50))
    build(ix, live, rng, shard_size=10)
    apply_changes(index_dir=ix, remove_ids=[1, 2, 3, 22])
    for i in (1, 2, 3, 22):
        del live[i]
    before = index_answers(ix)
    reader = open_index(ix)  # opened before: keeps answering from the files it mapped
    terms = analyze(["heparin sepsis"])[0]
    got = reader.lexical.search(terms, 20)
    out = mimicsearch("compact", str(ix), "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["command"] == "compact" and r["segments_before"] == 5 and r["segments"] == 1
    assert r["documents_before"] == 50 and r["documents"] == 46 and r["merges"] == 1
    again = reader.lexical.search(terms, 20)
    assert [a.tolist() for a in again] == [g.tolist() for g in got]
    assert index_answers(ix) == before == fresh_answers(live)
    files_are_exactly_the_manifests(ix)
    out = mimicsearch("compact", str(ix), "--json")
    assert json.loads(out.stdout)["merges"] == 0
    info = json.loads(mimicsearch("info", str(ix), "--json").stdout)
    assert len(info["lexical"]["segments"]) == 1
    bad = mimicsearch("compact", str(ix), "--max-segments", "0")
    assert bad.returncode == 1 and "--max-segments 0" in bad.stderr
    assert "Traceback" not in bad.stderr


KILLER = """
import os, signal, sys
point, nth = sys.argv[1], int(sys.argv[2])
del sys.argv[1:3]
from mimicsearch.index import commit
from mimicsearch.index.manifest import IndexManifest
calls = [0]
def hit():
    calls[0] += 1
    if calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
if point == "manifest":  # new files written, the manifest not yet
    save = IndexManifest.save
    def patched(self, d):
        hit()
        save(self, d)
    IndexManifest.save = patched
else:  # the manifest written, the files it replaces not yet unlinked
    unlink = commit.unlink_replaced
    def patched(*a):
        hit()
        unlink(*a)
    commit.unlink_replaced = patched
from mimicsearch.cli import main
main()
"""


def run_killed(point: str, nth: int, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", KILLER, point, str(nth), *map(str, args)],
                          env=env, capture_output=True, text=True, check=False)


def segment_contents(ix) -> list:
    m = IndexManifest.load(ix)
    return [[s.files[r].sha256 for r in sorted(s.files)] + [s.first_row, s.end_row]
            for s in m.lexical.segments]


@pytest.mark.parametrize("point", ["manifest", "unlink"])
def test_compact_killed_at_each_commit_point_then_rerun_equals_uninterrupted(tmp_path,
                                                                             point):
    """`compact --max-segments 2` over 5 segments is several commits; kill -9 before or
    after each manifest write: the index opens and verifies with the answers it had, and
    the re-run ends where an uninterrupted run ends, with no file left behind."""
    rng = np.random.default_rng(4)
    base = tmp_path / "base"
    live = dict.fromkeys(range(50))
    build(base, live, rng, shard_size=10)
    apply_changes(index_dir=base, remove_ids=[4, 30, 31])
    want_answers = index_answers(base)
    full = tmp_path / "full"
    subprocess.run(["cp", "-a", str(base), str(full)], check=True)
    assert mimicsearch("compact", str(full), "--max-segments", "2").returncode == 0
    want = segment_contents(full)
    assert len(want) == 2
    for nth in (1, 2):  # two merges: the smallest neighbours, then the rest
        ix = tmp_path / f"killed-{point}-{nth}"
        subprocess.run(["cp", "-a", str(base), str(ix)], check=True)
        r = run_killed(point, nth, "compact", ix, "--max-segments", "2")
        assert r.returncode == -signal.SIGKILL, r.stderr[-800:]
        assert index_answers(ix) == want_answers  # opens, verifies, same answers
        again = mimicsearch("compact", str(ix), "--max-segments", "2")
        assert again.returncode == 0, again.stderr
        assert segment_contents(ix) == want and index_answers(ix) == want_answers
        files_are_exactly_the_manifests(ix)


@pytest.mark.parametrize("point,nth", [("manifest", 1), ("unlink", 1), ("manifest", 2),
                                       ("unlink", 2)])
def test_an_add_killed_at_each_commit_point_then_rerun_equals_uninterrupted(tmp_path, point,
                                                                            nth):
    """An `add` that pushes the index past the segment limit commits twice: the notes, then
    a merge. Killed before or after either manifest write, then re-run with the same
    notes: every state opens with exact answers, and the end equals an uninterrupted add."""
    rng = np.random.default_rng(5)
    base = tmp_path / "base"
    live = dict.fromkeys(range(40))
    build(base, live, rng, shard_size=3)  # 14 segments
    assert len(IndexManifest.load(base).lexical.segments) == 14
    apply_changes(index_dir=base, remove_ids=[7])
    del live[7]
    x, meta, _ = notes(list(range(40, 46)), rng)
    full = tmp_path / "full"
    subprocess.run(["cp", "-a", str(base), str(full)], check=True)
    apply_changes(index_dir=full, vectors=x, metadata=meta)
    apply_changes(index_dir=full, vectors=x[:3], metadata=meta.slice(0, 3),
                  remove_ids=[40, 41, 42])  # 16 segments: at the limit
    assert len(IndexManifest.load(full).lexical.segments) == 16
    ix = tmp_path / "ix"
    subprocess.run(["cp", "-a", str(full), str(ix)], check=True)
    done = tmp_path / "done"
    subprocess.run(["cp", "-a", str(full), str(done)], check=True)
    x2, meta2, _ = notes(list(range(46, 50)), rng)
    apply_changes(index_dir=done, vectors=x2, metadata=meta2)
    want = segment_contents(done)
    want_answers = index_answers(done)
    assert len(want) == 16  # 17 after the add, merged back to 16
    np.save(tmp_path / "x2.npy", x2)
    with pa.OSFile(str(tmp_path / "meta2.arrow"), "wb") as f, \
            pa.ipc.new_file(f, meta2.schema) as w:
        w.write_table(meta2)
    child = f"""
import os, signal, sys
import numpy as np, pyarrow as pa
from mimicsearch.index import apply_changes, commit
from mimicsearch.index.manifest import IndexManifest
calls = [0]
def hit():
    calls[0] += 1
    if calls[0] == {nth}:
        os.kill(os.getpid(), signal.SIGKILL)
if {point!r} == "manifest":
    save = IndexManifest.save
    def patched(self, d):
        hit()
        save(self, d)
    IndexManifest.save = patched
else:
    unlink = commit.unlink_replaced
    def patched(*a):
        hit()
        unlink(*a)
    commit.unlink_replaced = patched
meta = pa.ipc.open_file({str(tmp_path / "meta2.arrow")!r}).read_all()
apply_changes(index_dir={str(ix)!r}, vectors=np.load({str(tmp_path / "x2.npy")!r}),
              metadata=meta, missing="ignore")
"""
    r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert r.returncode == -signal.SIGKILL, r.stderr[-800:]
    m = IndexManifest.load(ix)
    open_index(ix)  # verifies every file
    if m.rows == IndexManifest.load(full).rows:  # killed before the notes' commit
        apply_changes(index_dir=ix, vectors=x2, metadata=meta2)
    else:  # the notes are in; the re-run's ids are refused, a no-op commit merges
        with pytest.raises(ValueError, match="already in the index"):
            apply_changes(index_dir=ix, vectors=x2, metadata=meta2)
        apply_changes(index_dir=ix, remove_ids=[])
    assert segment_contents(ix) == want and index_answers(ix) == want_answers
    files_are_exactly_the_manifests(ix)


def test_top_k_keeps_the_first_ties_at_the_cut():
    """Which tied notes make the top k must not depend on numpy's partition: the first in
    index order, so an index with tombstones between them answers as a rebuilt one."""
    from mimicsearch.index.lexical import top_k

    rng = np.random.default_rng(0)
    for _ in range(50):
        s = rng.integers(0, 4, 300).astype(np.float32)
        k = int(rng.integers(1, 300))
        want = np.lexsort((np.arange(300), -s))[:k]
        assert top_k(s, k).tolist() == want.tolist()
