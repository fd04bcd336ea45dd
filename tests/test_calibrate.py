"""An index calibrating its own search setting: on constructed corpora where one retriever
must win (or only their fusion can), calibration chooses it; mode "auto" then answers
exactly as that explicit setting; the record survives the manifest; sync calibrates again
past the documented share of changes and not below it. Real faiss indexes, real BM25
segments, real files; the sync test encodes with the bundled model."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from fixtures.server import mimicsearch
from fixtures.vectors import unit

from mimicsearch import calibrate
from mimicsearch.calibrate import Setting, calibrate_index, choose, grid, next_note_pairs
from mimicsearch.fusion import Fusion, fuse
from mimicsearch.index import ArraySource, BuildOptions, IndexManifest, build_index
from mimicsearch.index.manifest import Calibration
from mimicsearch.pipeline import sync_notes
from mimicsearch.search import Searcher

DIM = 32
LETTERS = list("bcdfghjklmnpqrstvwz")


def one(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


def word(rng) -> str:
    return "".join(rng.choice(LETTERS, 9))


def linked_patients(kind: str, patients: int, notes: int, rng, first_subject: int = 0):
    """Texts and vectors of `patients` patients with `notes` notes each, in time order.
    kind "lexical": consecutive notes share a rare word, vectors are random; "dense":
    consecutive notes are near neighbours in vector space, words are random."""
    texts, vecs, subjects = [], [], []
    filler = [word(rng) for _ in range(5000)]
    for p in range(patients):
        links = [word(rng) for _ in range(notes + 1)]
        v = one(rng.standard_normal(DIM))
        for j in range(notes):
            words = list(rng.choice(filler, 8))
            if kind == "lexical":
                words += [links[j], links[j + 1]]
                vec = one(rng.standard_normal(DIM))
            else:
                v = one(v + 0.25 * one(rng.standard_normal(DIM)))
                vec = v
            rng.shuffle(words)
            texts.append(" ".join(words))
            vecs.append(vec)
            subjects.append(str(first_subject + p))
    return texts, np.array(vecs, np.float32), subjects


def build(tmp_path, kinds: dict, seed: int = 0):
    """An index of patients of each kind ({kind: patients}), 5 notes each, calibrated."""
    rng = np.random.default_rng(seed)
    texts, vecs, subjects = [], [], []
    for kind, n in kinds.items():
        t, v, s = linked_patients(kind, n, 5, rng, first_subject=len(set(subjects)))
        texts += t
        vecs.append(v)
        subjects += s
    meta = pa.table({"id": np.arange(len(texts), dtype=np.int64), "SUBJECT_ID": subjects,
                     "TEXT": texts})
    ix = tmp_path / "ix"
    build_index(ArraySource(np.concatenate(vecs), meta), ix, model_fingerprint="f",
                progress=False, options=BuildOptions(index_key="Flat"))
    return ix, calibrate_index(ix)


def table_row(record: Calibration, label: str) -> dict:
    return next(r for r in record.table if r["label"] == label)


def test_where_only_words_link_the_notes_calibration_picks_lexical(tmp_path):
    _, c = build(tmp_path, {"lexical": 40})
    assert c.chosen["mode"] == "lexical", c.chosen
    assert table_row(c, "lexical")["recall@5"] > 0.95
    assert table_row(c, "dense")["recall@10"] < 0.3
    assert c.pairs == 160 and c.patients == 40 and c.reason is None


def test_where_only_vectors_link_the_notes_calibration_picks_dense(tmp_path):
    _, c = build(tmp_path, {"dense": 40})
    assert c.chosen["mode"] == "dense", c.chosen
    assert table_row(c, "dense")["recall@5"] > 0.95
    assert table_row(c, "lexical")["recall@10"] < 0.3


def test_where_each_retriever_links_half_a_fusion_is_chosen_and_auto_is_it(tmp_path):
    ix, c = build(tmp_path, {"lexical": 30, "dense": 30})
    chosen = Setting.from_dict(c.chosen)
    assert chosen.mode == "hybrid", c.chosen
    best_single = max(table_row(c, m)["score"] for m in ("dense", "lexical"))
    assert table_row(c, chosen.label)["score"] > best_single + 0.2
    s = Searcher(ix)
    assert s.auto() == chosen and s.default_fusion() == chosen.fusion
    ids = s.ids()
    auto = s.search_notes(ids[::7], k=10)
    explicit = s.search_notes(ids[::7], k=10, mode="hybrid", fusion=chosen.fusion)
    assert [[h.to_dict() for h in q] for q in auto] == [[h.to_dict() for h in q]
                                                        for q in explicit]
    # a text query with its vector, as a server passes it: the same setting
    texts = s.notes(ids[:5])
    vecs = np.stack([s.pool_query(s.index.store.rows_of([n.id])[0]) for n in texts])
    got = s.search_texts([n.text for n in texts], k=10, vectors=vecs)
    want = s.search_texts([n.text for n in texts], k=10, vectors=vecs, mode="hybrid",
                          fusion=chosen.fusion)
    assert [[h.to_dict() for h in q] for q in got] == [[h.to_dict() for h in q]
                                                       for q in want]
    # the measured recall is what those searches give on the sampled pairs
    anchors, targets, _ = next_note_pairs(s.index.store, c.seed)
    hits = s.search_notes(anchors, k=10)
    r10 = np.mean([t in [h.id for h in q] for t, q in zip(targets, hits)])
    assert r10 == pytest.approx(table_row(c, chosen.label)["recall@10"], abs=1e-4)


def test_the_record_round_trips_and_info_shows_it(tmp_path):
    ix, c = build(tmp_path, {"lexical": 12, "dense": 12})
    m = IndexManifest.load(ix)
    assert m.calibration == c
    assert Calibration.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert len(c.table) == len(grid()) and sum(r["chosen"] for r in c.table) == 1
    again = calibrate_index(ix)  # deterministic for one index state and seed
    assert again.table == c.table and again.chosen == c.chosen
    info = json.loads(mimicsearch("info", str(ix), "--json").stdout)
    assert info["calibration"]["chosen"] == c.chosen
    text = mimicsearch("info", str(ix)).stdout
    assert f"calibrated {c.chosen['label']}," in text
    fewer = mimicsearch("calibrate", str(ix), "--pairs", "40", "--json", "--no-progress")
    assert fewer.returncode == 0, fewer.stderr
    assert json.loads(fewer.stdout)["pairs"] == 40 == IndexManifest.load(ix).calibration.pairs


def test_the_rule_prefers_the_simpler_setting_within_noise():
    rng = np.random.default_rng(0)
    settings = [Setting("dense"),
                Setting("hybrid", Fusion("zscore", dense_weight=0.5, lexical_weight=0.5))]
    groups = np.repeat(np.arange(100), 3)
    base = rng.integers(0, 2, 300).astype(float)
    noisy = base.copy()  # wins 6 pairs, loses 4: a little better, within noise
    noisy[rng.choice(np.flatnonzero(base == 0), 6, replace=False)] = 1
    noisy[rng.choice(np.flatnonzero(base == 1), 4, replace=False)] = 0
    chosen, rows = choose(np.stack([base, noisy], 1), groups, settings)
    assert chosen == 0 and rows[1]["best"] and rows[0]["chosen"]
    clear = np.maximum(base, rng.integers(0, 2, 300))  # much better
    chosen, _ = choose(np.stack([base, clear], 1), groups, settings)
    assert chosen == 1


def test_zscore_fusion_standardises_each_list():
    got = fuse({"dense": [("a", 0.9), ("b", 0.5), ("c", 0.4)],
                "lexical": [("c", 30.0), ("a", 10.0), ("b", 8.0)]},
               Fusion("zscore", dense_weight=0.5, lexical_weight=0.5))
    d = np.array([0.9, 0.5, 0.4])
    x = np.array([10.0, 8.0, 30.0])
    want = 0.5 * (d - d.mean()) / d.std() + 0.5 * (x - x.mean()) / x.std()
    assert [f.key for f in got] == [k for _, k in sorted(zip(-want, "abc"))]
    assert [f.score for f in got] == pytest.approx(sorted(want, reverse=True))


def test_an_index_without_patients_keeps_the_default_and_says_why(tmp_path):
    rng = np.random.default_rng(1)
    meta = pa.table({"id": np.arange(30, dtype=np.int64),
                     "TEXT": [" ".join(rng.choice(LETTERS, 5)) for _ in range(30)]})
    ix = tmp_path / "ix"
    build_index(ArraySource(unit(rng.standard_normal((30, DIM))), meta), ix,
                model_fingerprint="f", progress=False, options=BuildOptions(index_key="Flat"))
    c = calibrate_index(ix)
    assert c.reason and "SUBJECT_ID" in c.reason
    assert Searcher(ix).auto() == calibrate.DEFAULT


def test_sync_calibrates_again_past_the_share_of_changes_and_not_below(serve_index,
                                                                       serve_notes,
                                                                       tmp_path):
    ix = tmp_path / "ix"
    shutil.copytree(serve_index, ix)
    first = IndexManifest.load(ix).calibration
    assert first is not None and first.changed == 0 and first.live_notes == 240
    notes, later = (pd.read_csv(p) for p in serve_notes)
    few = pd.concat([notes, later.iloc[:20]])  # 20 of 240 new: below 20%
    s = sync_notes(few, index_dir=ix, progress=False)
    assert s.added == 20 and s.calibrated is None
    c = IndexManifest.load(ix).calibration
    assert c.changed == 20 and c.live_notes == 240 and c.table == first.table
    many = tmp_path / "many.csv"  # 40 more retracted: 60 changes of 240, past 20%
    few.iloc[40:].to_csv(many, index=False)
    out = mimicsearch("sync", str(ix), str(many), "--remove-missing", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "40 removed" in out.stdout and "calibrated again (more than 20%" in out.stdout
    c = IndexManifest.load(ix).calibration
    assert c.changed == 0 and c.live_notes == 220
    assert c.pairs > 0 and c.table != first.table


def test_patient_search_is_calibrated_on_kept_diagnoses(tmp_path):
    ix, _ = build(tmp_path, {"lexical": 12, "dense": 12})
    dx = tmp_path / "DIAGNOSES_ICD.csv"
    rows = [(p, p * 10, "4019" if p < 12 else "486") for p in range(24)]
    rows += [(p, p * 10, "25000") for p in range(0, 24, 3)] + [(5, 50, ""), (6, 60, "X1")]
    pd.DataFrame(rows, columns=["SUBJECT_ID", "HADM_ID", "ICD9_CODE"]).to_csv(dx, index=False)
    out = mimicsearch("calibrate", str(ix), "--diagnoses", str(dx), "--json", "--no-progress")
    assert out.returncode == 0, out.stderr
    ps = json.loads(out.stdout)["patient_search"]
    assert ps["patients"] == 24 and len(ps["table"]) == len(calibrate.patient_grid())
    assert ps["measure"] == "diagnosis chapter overlap@10"
    s = Searcher(ix)
    chosen = Setting.from_dict(ps["chosen"])
    assert s.auto(patients=True) == chosen
    got = s.similar_patients(subject_id="3", k=5)
    want = s.similar_patients(subject_id="3", k=5, mode=chosen.mode, fusion=chosen.fusion)
    assert [p.to_dict() for p in got] == [p.to_dict() for p in want]
    info = mimicsearch("info", str(ix)).stdout
    assert f"patients   auto: {chosen.label}, diagnosis chapter overlap@10" in info
    # the lexical-linked patients share a chapter: the row measured says so
    row = next(r for r in ps["table"] if r["chosen"])
    assert row["score"] > 0.5


def test_bad_diagnoses_files_are_refused_by_name(tmp_path):
    ix, _ = build(tmp_path, {"lexical": 5})
    bad = tmp_path / "dx.csv"
    bad.write_text("SUBJECT_ID,HADM_ID,CODE\n1,10,4019\n")
    out = mimicsearch("calibrate", str(ix), "--diagnoses", str(bad))
    assert out.returncode == 1 and str(bad) in out.stderr and "ICD9_CODE" in out.stderr
    bad.write_text("SUBJECT_ID,HADM_ID,ICD9_CODE\n1,10,4019\n2,,486\n")
    out = mimicsearch("calibrate", str(ix), "--diagnoses", str(bad))
    assert out.returncode == 1 and "line 3" in out.stderr and "Traceback" not in out.stderr
    assert IndexManifest.load(ix).diagnoses is None  # nothing kept from a refused file


def test_copies_of_the_anchor_are_left_out_but_a_copied_next_note_counts(tmp_path):
    """Copy-forward notes: a copy of the anchor elsewhere is not the answer; the next
    note being a copy of the anchor is."""
    from mimicsearch.embeddings import text_hash

    rng = np.random.default_rng(3)
    texts, vecs, subjects = linked_patients("lexical", 30, 4, rng)
    texts[1] = texts[0]  # patient 0's next note repeats its first: a hit for that pair
    texts.append(texts[4])  # patient 1's first note copied into a patient of its own
    vecs[5] = one(vecs[4] + 0.05 * one(rng.standard_normal(DIM)))  # its next note: near
    vecs = np.concatenate([vecs, vecs[4:5]])
    subjects.append("copy")
    meta = pa.table({"id": np.arange(len(texts), dtype=np.int64), "SUBJECT_ID": subjects,
                     "TEXT": texts, "TEXT_HASH": [text_hash(t) for t in texts]})
    ix = tmp_path / "ix"
    build_index(ArraySource(vecs, meta), ix, model_fingerprint="f", progress=False,
                options=BuildOptions(index_key="Flat"))
    s = Searcher(ix)
    settings = [Setting("dense"), Setting("lexical")]
    ranks, groups, _ = calibrate.measure_notes(s, settings)
    anchors, targets, _ = next_note_pairs(s.index.store)
    at = {a: i for i, a in enumerate(anchors)}
    assert targets[at[0]] == 1 and ranks[at[0], 1] == 1  # the copied next note counts
    assert targets[at[4]] == 5 and ranks[at[4], 0] == 1  # the copy is not ranked above it
    (hits,) = s.search_notes([4], k=3, mode="dense")
    assert [h.id for h in hits[:2]] == [len(texts) - 1, 5]  # a plain search returns both
