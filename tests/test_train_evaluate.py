"""Evaluation metrics on constructed cases with known answers, and on a real model."""
import math

import numpy as np
import pandas as pd
import pytest
from mimicsearch.train.evaluate import (
    comparison_rows,
    evaluate,
    load_embedder,
    next_note_recall,
    recall_at_k,
)
from mimicsearch.train.pairs import PairOptions, load_table, make_pairs
from train_helpers import write_synthetic


def test_recall_at_k_known_ranks():
    corpus = np.eye(4, dtype=np.float32)
    # query i's scores against corpus rows are its own coordinates
    queries = np.array([[1.0, 0.5, 0.0, 0.0],    # target 0 ranks 1
                        [0.9, 0.1, 0.8, 0.0],    # target 1 ranks 3
                        [0.0, 0.0, 0.0, 0.0],    # all tied: target 3 ranks 1 (ties go to it)
                        [0.5, 0.6, 0.7, 0.1]])   # target 3 ranks 4
    targets = np.array([0, 1, 3, 3])
    got = recall_at_k(queries, corpus, targets, ks=(1, 2, 3, 4), chunk=3)
    assert got == {"recall@1": 0.5, "recall@2": 0.5, "recall@3": 0.75, "recall@4": 1.0}
    # excluding row 0 (the target 1 is never excluded) lifts query 1 to rank 2; excluding
    # rows 0-2 lifts query 3 to rank 1
    excluded = [[], [0, 1], [], [0, 1, 2]]
    got = recall_at_k(queries, corpus, targets, excluded, ks=(1, 2))
    assert got == {"recall@1": 0.75, "recall@2": 1.0}


def test_next_note_recall_excludes_anchor_own_text():
    # a chain n1 -> n2 -> n3 -> n4 of one patient, texts embedded as one-hot of their name
    texts = {1: "n1", 2: "n2", 3: "n3", 4: "n4"}
    pairs = pd.DataFrame({"anchor_row_id": [1, 2, 3], "positive_row_id": [2, 3, 4],
                          "anchor_text": [texts[i] for i in (1, 2, 3)],
                          "positive_text": [texts[i] for i in (2, 3, 4)]})
    # every note is most similar to itself, then to its successor
    sims = {"n1": [1, .9, 0, 0], "n2": [0, 1, .9, 0], "n3": [0, 0, 1, .9], "n4": [0, 0, 0, 1]}

    def embed(batch):
        v = np.array([sims[t] for t in batch], dtype=np.float32)
        return v
    # corpus = positives n2, n3, n4; query n2 finds itself first under the seed's protocol
    got = next_note_recall(embed, pairs, ks=(1,))
    assert got["recall@1_excluded"] == 1.0
    assert got["recall@1_seed"] == pytest.approx(1 / 3)
    assert got["corpus"] == 3


@pytest.fixture(scope="module")
def synth_pairs(tmp_path_factory):
    root = write_synthetic(tmp_path_factory.mktemp("synth"), patients=30, notes_per_patient=4)
    make_pairs(root / "NOTEEVENTS.csv", root / "pairs",
               options=PairOptions(val_fraction=0.2, test_fraction=0.4, seed=0))
    return root / "pairs"


def test_evaluate_minilm_writes_metrics_and_table(minilm_dir, synth_pairs, tmp_path):
    result = evaluate(minilm_dir, synth_pairs, base=minilm_dir, out=tmp_path / "metrics.json",
                      device="cpu", max_seq_length=64)
    m = result["models"]["model"]["metrics"]
    assert result["models"]["base"]["metrics"] == m  # same model, same numbers
    assert m["patients"] == 12 and m["pairs"] == 36
    assert 0 <= m["recall@1_excluded"] <= m["recall@5_excluded"] <= m["recall@10_excluded"] <= 1
    assert m["recall@10_excluded"] > 10 / 36  # far above chance on patient-specific notes
    assert 0.5 < m["auroc_macro"] <= 1 and m["auroc_codes"] >= 3
    lo, hi = m["auroc_ci95_low"], m["auroc_ci95_high"]
    assert 0 <= lo < hi <= 1 and lo - 0.02 <= m["auroc_macro"] <= hi + 0.02
    assert -1 <= m["silhouette_chapter"] <= 1 and -1 <= m["silhouette_category"] <= 1
    assert math.isclose(m["silhouette_difference"],
                        m["silhouette_chapter"] - m["silhouette_category"])
    rows = {k: (b, f) for k, b, f in comparison_rows(result)}
    assert rows["recall@5_excluded"] == (m["recall@5_excluded"],) * 2
    assert (tmp_path / "metrics.json").is_file()


def test_load_embedder_gives_normalised_rows(minilm_dir):
    embed = load_embedder(minilm_dir, device="cpu", max_seq_length=32)
    v = embed(["chest pain", "pneumonia with cough"])
    assert v.shape == (2, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)


def test_exported_onnx_model_is_evaluated_like_its_source(minilm_onnx, minilm_dir, synth_pairs):
    """The Embedder seam: an exported model dir goes through the same metrics code."""
    onnx_embed = load_embedder(minilm_onnx)
    st_embed = load_embedder(minilm_dir, device="cpu")
    texts = ["chest pain radiating to the left arm", "pneumonia with productive cough"]
    cosine = (onnx_embed(texts) * st_embed(texts)).sum(axis=1)
    assert (cosine > 0.98).all(), cosine
    pairs = load_table(synth_pairs, "pairs", "test")
    got = next_note_recall(onnx_embed, pairs)
    assert got["recall@10_excluded"] > 10 / len(pairs)
    with pytest.raises(ValueError, match="max_seq_length"):
        load_embedder(minilm_onnx, max_seq_length=7)


def test_evaluate_measures_the_variant_asked_for(minilm_onnx, minilm_dir):
    """int8 beside fp32 on the same notes: the shipped variant is what gets measured."""
    texts = ["chest pain radiating to the left arm", "pneumonia with productive cough"]
    fp32 = load_embedder(minilm_onnx, precision="fp32")(texts)
    int8 = load_embedder(minilm_onnx, precision="int8")(texts)
    default = load_embedder(minilm_onnx)(texts)
    assert np.array_equal(default, int8) and not np.array_equal(fp32, int8)
    assert (fp32 * int8).sum(axis=1).min() > 0.98
    with pytest.raises(ValueError, match="sentence-transformers model"):
        load_embedder(minilm_dir, device="cpu", precision="int8")
