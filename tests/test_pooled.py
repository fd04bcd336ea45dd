"""Patients' vector sums kept with the index: written at build (by each piece, merged by the
store's typing), updated by every add/edit/remove, and equal to pooling every live row."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from fixtures.vectors import unit

from mimicsearch.index import (
    ArraySource,
    BuildOptions,
    IndexManifest,
    apply_changes,
    build_index,
    merge_shards,
    open_index,
)
from mimicsearch.patients import pool

DIM = 12


def notes(ids, rng, subjects=9):
    # the same patient spelled two ways (" 7" and "7"): one patient once the store types it
    raw = [(" " if i % 5 == 0 else "") + str(i % subjects) for i in ids]
    meta = pa.table({"id": pa.array(ids, pa.int64()), "SUBJECT_ID": raw,
                     "TEXT": [f"note {i} heparin" for i in ids]})
    return unit(rng.standard_normal((len(ids), DIM))), meta


def assert_kept_equals_pooled(ix):
    index = open_index(ix)
    assert index.manifest.patients is not None
    kept = pool(index, None)  # from the sums the index keeps
    rows = pool(index, index.store.live.copy())  # from every live row
    assert kept.subjects == rows.subjects
    np.testing.assert_allclose(kept.vectors, rows.vectors, atol=2e-6)
    assert [r.tolist() for r in kept.rows] == [r.tolist() for r in rows.rows]


@pytest.mark.parametrize("key,merge", [("Flat", False), ("IVF4,Flat", False),
                                       ("IVF4,Flat", True), ("HNSW8", False)])
def test_kept_sums_follow_every_change(tmp_path, key, merge):
    rng = np.random.default_rng(0)
    x, meta = notes(range(120), rng)
    ix = tmp_path / "ix"
    build_index(ArraySource(x, meta, batch_rows=25), ix, model_fingerprint="f",
                progress=False, options=BuildOptions(index_key=key, shard_size=50))
    if merge:
        merge_shards(ix)
    assert_kept_equals_pooled(ix)
    x2, meta2 = notes(range(120, 150), rng, subjects=12)  # 3 new patients
    apply_changes(index_dir=ix, vectors=x2, metadata=meta2)
    assert_kept_equals_pooled(ix)
    x3, meta3 = notes([3, 4, 130], rng)  # edits
    apply_changes(index_dir=ix, vectors=x3, metadata=meta3, remove_ids=[3, 4, 130])
    assert_kept_equals_pooled(ix)
    gone = [i for i in range(150) if i % 12 == 11]  # every note of one patient
    apply_changes(index_dir=ix, remove_ids=gone)
    assert_kept_equals_pooled(ix)
    assert "11" not in [str(s) for s in pool(open_index(ix), None).subjects]


def test_no_subject_column_keeps_no_sums(tmp_path):
    rng = np.random.default_rng(1)
    x, meta = notes(range(30), rng)
    build_index(ArraySource(x, meta.drop_columns(["SUBJECT_ID"])), tmp_path / "ix",
                model_fingerprint="f", progress=False, options=BuildOptions(index_key="Flat"))
    assert IndexManifest.load(tmp_path / "ix").patients is None


@pytest.mark.parametrize("key", ["Flat", "IVF4,Flat"])
def test_a_commit_never_rewrites_a_shard_past_the_rewrite_size(tmp_path, key, monkeypatch):
    """Into an index built as one large shard, a commit's new rows start a new shard and
    its removals there are tombstones: the large shard's file is not rewritten, removed
    notes never come back, and the patients' sums stay exact."""
    from mimicsearch.index import edit

    monkeypatch.setattr(edit, "REWRITE_ROWS", 50)
    rng = np.random.default_rng(2)
    x, meta = notes(range(120), rng)
    ix = tmp_path / "ix"
    build_index(ArraySource(x, meta), ix, model_fingerprint="f", progress=False,
                options=BuildOptions(index_key=key))
    big = IndexManifest.load(ix).shards[0].index
    x2, meta2 = notes(range(120, 180), rng)
    apply_changes(index_dir=ix, vectors=x2, metadata=meta2)
    r = apply_changes(index_dir=ix, remove_ids=[1, 2, 3, 125])
    m = r.manifest
    assert m.shards[0].index == big and len(m.shards) == 3  # 120 | 50 | 10 new rows
    assert [s.ntotal for s in m.shards] == [120, 49, 10]  # 125 removed natively
    assert r.tombstoned == 3 and r.native == 1
    assert_kept_equals_pooled(ix)
    index = open_index(ix)
    allowed = index.store.live.copy()
    _, found = index.search(x[1:4], 5, allowed)
    assert not set(found.ravel().tolist()) & {1, 2, 3}
