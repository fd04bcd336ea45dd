"""Retrievers side by side (train/compare.py) on constructed cases with known answers:
BM25 and dense scorers, hybrid fusion as the product fuses, the validation choice of a
fusion, and patient search's chapter overlap through a real index."""
import numpy as np
import pandas as pd
import pytest
from mimicsearch.train import evaluate as ev
from mimicsearch.train.compare import (
    bm25_scorer,
    choose_fusion,
    dense_scorer,
    hybrid_scorer,
    patient_search,
    scorer_recall,
)
from mimicsearch.train.protocol import pair_targets

from mimicsearch.fusion import Fusion


def chain_pairs():
    texts = ["n1", "n2", "n3", "n4"]
    return pd.DataFrame({"anchor_row_id": [1, 2, 3], "positive_row_id": [2, 3, 4],
                         "anchor_text": texts[:3], "positive_text": texts[1:]})


def test_dense_recall_equals_the_models_own_evaluation():
    sims = {"n1": [1, .9, 0, 0], "n2": [0, 1, .9, 0], "n3": [0, 0, 1, .9], "n4": [0, 0, 0, 1]}

    def embed(batch):
        return np.array([sims[t] for t in batch], dtype=np.float32)
    pairs = chain_pairs()
    corpus, targets, excluded = pair_targets(pairs)
    got = scorer_recall(dense_scorer(embed(pairs.anchor_text), embed(corpus.positive_text)),
                           targets, excluded, ks=(1,))
    want = ev.next_note_recall(embed, pairs, ks=(1,))
    assert got == {k: want[k] for k in got} and got["recall@1_excluded"] == 1.0
    assert got["recall@1_seed"] == pytest.approx(1 / 3)


def test_bm25_finds_the_note_sharing_a_rare_word_and_misses_unmatched_ones():
    queries = ["started warfarin for atrial fibrillation", "nothing in common here"]
    corpus = ["patient walked in the hall", "warfarin dose held, INR 3.1",
              "the patient slept well"]
    score = bm25_scorer(queries, corpus)
    s = score(0, [])
    assert np.argmax(s) == 1 and np.isinf(s[0]) and np.isinf(s[2])
    assert np.isinf(score(1, [])).all()  # shares no word: retrieves nothing
    assert np.isinf(score(0, [1])[1])  # dropped rows are never candidates


def test_hybrid_ranks_as_the_product_fuses():
    # 4 candidates; dense ranks the target (row 2) third, lexical first
    dense = lambda i, drop: np.array([0.9, 0.8, 0.7, 0.1])
    lexical = lambda i, drop: np.array([-np.inf, 1.0, 5.0, 2.0])
    fused = hybrid_scorer(dense, lexical, Fusion(k=60))(0, [])
    # RRF: row0 1/61; row1 1/62+1/63; row2 1/63+1/61; row3 1/64+1/62
    order = np.argsort(-fused, kind="stable").tolist()
    assert order == [2, 1, 3, 0]
    got = scorer_recall(hybrid_scorer(dense, lexical, Fusion()), np.array([2]), [[]],
                           ks=(1,))
    assert got["recall@1_excluded"] == 1.0
    deep = hybrid_scorer(dense, lexical, Fusion(depth=1))(0, [])
    assert np.isfinite(deep).sum() == 2  # each list's top 1 only: rows 0 and 2


def test_choose_fusion_prefers_the_better_retriever():
    rng = np.random.default_rng(0)
    n = 40
    targets = np.arange(n)
    good = np.eye(n) + 0.01 * rng.random((n, n))  # lexical finds every target
    noise = rng.random((n, n))  # dense is noise
    dense = lambda i, drop: noise[i].copy()
    lexical = lambda i, drop: good[i].copy()
    grid = [Fusion(lexical_weight=0.25), Fusion(lexical_weight=2.0)]
    chosen, tried = choose_fusion(dense, lexical, targets, [[]] * n, grid)
    assert chosen.lexical_weight == 2.0 and len(tried) == 2
    assert tried[1]["recall@5"] >= tried[0]["recall@5"]


def test_patient_search_overlap_beats_random_on_constructed_patients():
    """Two diseases, three patients each: notes and codes agree within a disease, so the
    top patients share chapters and random does not."""
    rng = np.random.default_rng(1)
    story = {"cardiac": ("atrial fibrillation warfarin metoprolol", "42731"),
             "ortho": ("femur fracture fixation orthopedics", "82021")}
    notes, diagnoses, vectors = [], [], []
    centers = {"cardiac": np.eye(8)[0], "ortho": np.eye(8)[1]}
    for p in range(6):
        kind = "cardiac" if p < 3 else "ortho"
        diagnoses.append({"subject_id": p, "hadm_id": 100 + p, "seq_num": 1,
                          "icd9_code": story[kind][1]})
        for j in range(3):
            notes.append({"row_id": p * 10 + j, "subject_id": p, "hadm_id": 100 + p,
                          "text": f"{story[kind][0]} day {j}"})
            v = centers[kind] + 0.1 * rng.standard_normal(8)
            vectors.append(v / np.linalg.norm(v))
    notes, diagnoses = pd.DataFrame(notes), pd.DataFrame(diagnoses)
    got = patient_search(notes, diagnoses, {"model": np.array(vectors, np.float32)},
                         {"model": Fusion()}, k=2)
    assert got["patients"] == 6
    assert got["random"]["mean"] == pytest.approx(2 / 5)  # 2 of 5 others share the chapter
    for name in ("bm25", "model", "hybrid(model)"):
        assert got[name]["mean"] == 1.0, name
        assert got[name]["ci95"] == [1.0, 1.0]


def test_patient_index_keeps_every_window_of_a_note(tmp_path):
    """Window rows (as `--long windows` stores them) share their note's id and patient;
    the note's text is one lexical document; dense patient search pools every window."""
    from mimicsearch.train.compare import patient_index

    from mimicsearch.index import open_index
    from mimicsearch.search import Searcher

    notes = pd.DataFrame({"row_id": [7, 8, 9], "subject_id": [1, 2, 3],
                          "text": ["warfarin for atrial fibrillation", "femur fracture",
                                   "warfarin held"]})
    e = np.eye(4, dtype=np.float32)
    # patient 2's second window points where patient 1 is: only pooling windows sees it
    vectors = np.stack([e[0], e[1], e[0] * 0.6 + e[2] * 0.8, e[2] * 0.8 + e[3] * 0.6])
    ix = patient_index(notes, vectors, tmp_path / "ix", parents=np.array([0, 1, 1, 2]),
                       windows=np.array([0, 0, 1, 0]))
    store = open_index(ix).store
    assert store.table.column("window").to_pylist() == [0, 0, 1, 0]
    assert store.table.column("id").to_pylist() == [7, 8, 8, 9]
    assert Searcher(ix).ids() == [7, 8, 9]
    ranked = Searcher(ix).similar_patients(subject_id=1, k=2, mode="dense")
    assert [p.subject for p in ranked] == [2, 3] and ranked[0].notes == 1
    assert ranked[0].score == pytest.approx(float(vectors[1:3].sum(0)[0] /
                                                  np.linalg.norm(vectors[1:3].sum(0))))


def test_cross_fit_applies_each_folds_choice_made_on_the_other_folds():
    from mimicsearch import calibrate
    from mimicsearch.train.compare import FOLDS, cross_fit, folds_of

    settings = [calibrate.Setting("dense"), calibrate.Setting("lexical")]
    patients = np.array([str(p) for p in range(200)]).repeat(2)
    fold = folds_of(patients)
    # lexical wins on the patients of fold 0 only, by far: no other fold's choice sees it
    scores = np.zeros((len(patients), 2))
    scores[:, 0] = (fold != 0) * 1.0
    scores[:, 1] = (fold == 0) * 1.0
    values = np.stack([np.arange(len(patients)), -np.arange(len(patients))], 1)
    got, chosen = cross_fit(values, scores, patients, settings)
    assert len(chosen) == FOLDS and set(chosen) == {"dense"}
    assert (got == values[:, 0]).all()
    # a fold whose rest is lexical's chooses lexical, and applies it to its own units
    scores[:, 0], scores[:, 1] = (fold == 0) * 1.0, (fold != 0) * 1.0
    got, chosen = cross_fit(values, scores, patients, settings)
    assert set(chosen) == {"lexical"} and (got == values[:, 1]).all()
    # within noise the default stands: equal scores everywhere
    got, chosen = cross_fit(values, np.ones((len(patients), 2)), patients, settings,
                            default=settings[1])
    assert set(chosen) == {"lexical"}
