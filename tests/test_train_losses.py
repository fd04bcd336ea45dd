"""Losses against hand-computed values, InfoNCE vs the library, cached vs plain gradients."""
import math

import pytest
import torch
import torch.nn.functional as F
from mimicsearch.train.batching import PatientBatchSampler
from mimicsearch.train.losses import (
    chapter_matrix,
    hierarchical_from_embeddings,
    hierarchical_targets,
    infonce_from_embeddings,
    make_loss,
)
from mimicsearch.train.modeling import load_model
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

ANCHORS = ["chest pain and troponin rise", "pneumonia on chest film", "fall with hip fracture",
           "sepsis from urinary source", "new atrial fibrillation", "diabetic ketoacidosis"]
POSITIVES = ["cardiac cath shows lad lesion", "antibiotics for pneumonia", "hip repair surgery",
             "urine culture grew e coli", "rate control with metoprolol", "insulin drip started"]
CHAPTER_LISTS = [["390-459", "V"], ["460-519"], ["800-999", "E"], ["001-139", "580-629"],
                 ["390-459"], ["240-279"]]


def test_hierarchical_loss_matches_hand_computed_3x3():
    e0, e1, e2 = torch.eye(3)
    anchors = torch.stack([e0, e1, e2])
    positives = torch.stack([e0, (e0 + e1) / math.sqrt(2), e2])
    chapters = chapter_matrix([["390-459", "V"], ["390-459"], ["460-519"]])
    # cosine(anchor i, positive j)
    cos = [[1, 1 / math.sqrt(2), 0], [0, 1 / math.sqrt(2), 0], [0, 0, 1]]
    # row 0: own 2 chapters, shares 1 with pair 1 -> 0.3 * 1/2; row 1: own 1, shares 1 -> 0.3
    targets = [[1 / 1.15, 0.15 / 1.15, 0], [0.3 / 1.3, 1 / 1.3, 0], [0, 0, 1]]
    expected = 0.0
    for i in range(3):
        z = [c / 0.07 for c in cos[i]]
        log_norm = math.log(sum(math.exp(v) for v in z))
        expected -= sum(t * (v - log_norm) for t, v in zip(targets[i], z))
    expected /= 3
    torch.testing.assert_close(hierarchical_targets(chapters),
                               torch.tensor(targets, dtype=torch.float32))
    got = hierarchical_from_embeddings(anchors, positives, chapters, temperature=0.07)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_hierarchical_without_shared_chapters_is_infonce():
    torch.manual_seed(0)
    a, p = torch.randn(4, 8), torch.randn(4, 8)
    disjoint = chapter_matrix([["001-139"], ["140-239"], [], ["V"]])
    torch.testing.assert_close(hierarchical_from_embeddings(a, p, disjoint),
                               infonce_from_embeddings(a, p))


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    model = load_model(minilm_dir, device="cpu")
    model.max_seq_length = 16
    return model.eval()  # no dropout: plain and cached passes see the same network


def _features(model):
    return [model.preprocess(ANCHORS), model.preprocess(POSITIVES)]


def test_infonce_is_cross_entropy_of_scaled_cosine_logits(minilm):
    features = _features(minilm)
    library = MultipleNegativesRankingLoss(minilm, scale=1 / 0.07)(features, None)
    with torch.no_grad():
        a, p = (minilm(f)["sentence_embedding"] for f in _features(minilm))
    logits = F.normalize(a, dim=-1) @ F.normalize(p, dim=-1).T / 0.07
    by_hand = F.cross_entropy(logits, torch.arange(len(ANCHORS)))
    torch.testing.assert_close(library.detach(), by_hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(infonce_from_embeddings(a, p), by_hand)


def _grads(model, loss_fn, labels):
    model.zero_grad()
    loss = loss_fn(_features(model), labels)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("kind", ["hierarchical", "infonce"])
def test_cached_loss_gives_plain_gradients(minilm, kind):
    labels = chapter_matrix(CHAPTER_LISTS)
    plain_loss, plain = _grads(minilm, make_loss(kind, minilm), labels)
    cached_loss, cached = _grads(minilm, make_loss(kind, minilm, mini_batch_size=2), labels)
    torch.testing.assert_close(cached_loss, plain_loss, rtol=1e-5, atol=1e-6)
    assert plain.keys() == cached.keys() and len(plain) > 50
    for name in plain:
        torch.testing.assert_close(cached[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)
    assert any(g.abs().sum() > 0 for g in plain.values())


def test_make_loss_rejects_unknown_kind(minilm):
    with pytest.raises(ValueError, match=r"unknown loss 'triplet'; valid: \['infonce'"):
        make_loss("triplet", minilm)


def test_sampler_never_puts_one_patient_twice_in_a_batch():
    subjects = [1] * 12 + [2] * 5 + list(range(3, 40))
    sampler = PatientBatchSampler(subjects, batch_size=8, seed=0)
    batches = list(sampler)
    for batch in batches:
        assert len({subjects[i] for i in batch}) == len(batch)
    seen = [i for b in batches for i in b]
    assert len(seen) == len(set(seen))
    assert len(seen) >= len(subjects) - 12  # at most a few lone pairs of patient 1 left out
    assert sum(len(b) == 8 for b in batches) >= len(subjects) // 8 - 2
    assert list(sampler) == batches  # reproducible
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_sampler_plain_shuffle_can_mix_one_patient():
    subjects = [1] * 16
    assert list(PatientBatchSampler(subjects, 4)) == []  # no batch of one patient can be built
    assert len(list(PatientBatchSampler(subjects, 4, distinct_patients=False))) == 4
