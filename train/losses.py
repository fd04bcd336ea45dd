"""Contrastive losses over (anchor, next note) batches.

InfoNCE with in-batch negatives is sentence-transformers' MultipleNegativesRankingLoss (and its
GradCache twin CachedMultipleNegativesRankingLoss) with scale = 1 / temperature. The seed's
hierarchical loss softens the targets by shared ICD-9 chapters; its cached variant reuses the
library's GradCache machinery (CachedLossMixin), so a batch can be far larger than memory.
"""
from __future__ import annotations

import enum

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.losses.gradcache import CachedLossMixin
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)
from torch import Tensor, nn

from mimicsearch.icd import CHAPTER_INDEX, CHAPTERS

TEMPERATURE = 0.07
SHARED_CHAPTER_WEIGHT = 0.3


class LossKind(str, enum.Enum):
    INFONCE = "infonce"
    HIERARCHICAL = "hierarchical"


def chapter_matrix(chapter_lists) -> Tensor:
    """Multi-hot (batch, n_chapters) float matrix of each pair's anchor-admission chapters."""
    m = torch.zeros(len(chapter_lists), len(CHAPTERS))
    for i, chs in enumerate(chapter_lists):
        for c in chs:
            m[i, CHAPTER_INDEX[c]] = 1.0
    return m


def infonce_from_embeddings(anchors: Tensor, positives: Tensor,
                            temperature: float = TEMPERATURE) -> Tensor:
    """Cross-entropy of scaled cosine logits; the positive of anchor i is positive i."""
    logits = _cosine(anchors, positives) / temperature  # (B, B)
    return F.cross_entropy(logits, torch.arange(len(anchors), device=anchors.device))


def hierarchical_targets(chapters: Tensor, weight: float = SHARED_CHAPTER_WEIGHT) -> Tensor:
    """Soft targets: 1 on the diagonal, weight * |shared chapters| / |anchor's chapters| off it,
    each row normalised to sum to 1."""
    shared = chapters @ chapters.T  # (B, B) chapters anchor i shares with pair j
    own = chapters.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1)
    targets = weight * shared / own  # (B, B)
    targets.fill_diagonal_(1.0)
    return targets / targets.sum(dim=1, keepdim=True)  # (B, B)


def hierarchical_from_embeddings(anchors: Tensor, positives: Tensor, chapters: Tensor,
                                 temperature: float = TEMPERATURE,
                                 weight: float = SHARED_CHAPTER_WEIGHT) -> Tensor:
    """The seed's loss: cross-entropy of soft chapter targets against log-softmax of scaled
    cosine logits, averaged over anchors."""
    logits = _cosine(anchors, positives) / temperature  # (B, B)
    targets = hierarchical_targets(chapters.to(logits), weight)  # (B, B)
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class HierarchicalLoss(nn.Module):
    """ST-style loss: forward(sentence_features=[anchors, positives], labels=chapter matrix)."""

    def __init__(self, model: SentenceTransformer, temperature: float = TEMPERATURE,
                 weight: float = SHARED_CHAPTER_WEIGHT):
        super().__init__()
        self.model, self.temperature, self.weight = model, temperature, weight

    def forward(self, sentence_features, labels: Tensor) -> Tensor:
        anchors, positives = (self.model(f)["sentence_embedding"] for f in sentence_features)
        return hierarchical_from_embeddings(anchors, positives, labels, self.temperature,
                                            self.weight)


class CachedHierarchicalLoss(CachedLossMixin, nn.Module):
    """HierarchicalLoss with GradCache: embed in mini-batches without grad, take the loss's
    gradient wrt the embeddings, then re-embed each mini-batch with grad and back-propagate it."""

    def __init__(self, model: SentenceTransformer, temperature: float = TEMPERATURE,
                 weight: float = SHARED_CHAPTER_WEIGHT, mini_batch_size: int = 32):
        super().__init__()
        self.model, self.temperature, self.weight = model, temperature, weight
        self.mini_batch_size = mini_batch_size

    def calculate_loss(self, reps, labels=None, *, with_backward: bool = False) -> Tensor:
        anchors, positives = (torch.cat(r) for r in reps)  # (B, D) each
        loss = hierarchical_from_embeddings(anchors, positives, labels, self.temperature,
                                            self.weight)
        if with_backward:
            loss.backward()
            loss = loss.detach()
        return loss

    def forward(self, sentence_features, labels: Tensor) -> Tensor:
        return self.forward_cached(list(sentence_features), labels)


def make_loss(kind: LossKind | str, model: SentenceTransformer,
              temperature: float = TEMPERATURE, mini_batch_size: int | None = None) -> nn.Module:
    """The training loss; `mini_batch_size` turns on gradient caching (GradCache)."""
    try:
        kind = LossKind(kind)
    except ValueError:
        raise ValueError(f"unknown loss {kind!r}; valid: {[k.value for k in LossKind]}") from None
    scale = 1.0 / temperature
    if kind is LossKind.INFONCE:
        if mini_batch_size:
            return CachedMultipleNegativesRankingLoss(model, scale=scale,
                                                      mini_batch_size=mini_batch_size)
        return MultipleNegativesRankingLoss(model, scale=scale)
    if mini_batch_size:
        return CachedHierarchicalLoss(model, temperature, mini_batch_size=mini_batch_size)
    return HierarchicalLoss(model, temperature)


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # (B, B)
