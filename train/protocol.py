"""The next-note protocol every evaluation shares: which corpus row is each pair's target,
which rows a query drops under the "excluded" protocol (its own note and copies of its
text), how a rank is counted and recall@k of ranks.

A leaf module: `evaluate` (embedders, a score matrix) and `compare` (scorers, a row at a
time) both build on it and not on each other, so the two cannot drift apart in what they
call a hit.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

KS = (1, 5, 10)


def pair_targets(pairs: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, list[list[int]]]:
    """The corpus (distinct positives), each pair's target row in it, and the rows each
    query drops under the excluded protocol (its own note and copies of its text)."""
    corpus = pairs.drop_duplicates("positive_row_id").reset_index(drop=True)
    position = {r: i for i, r in enumerate(corpus["positive_row_id"])}
    by_text: dict[str, list[int]] = {}
    for i, t in enumerate(corpus["positive_text"]):
        by_text.setdefault(t, []).append(i)
    targets = pairs["positive_row_id"].map(position).to_numpy()
    excluded = [sorted({*by_text.get(t, []), *([position[r]] if r in position else [])}
                       - {int(tg)})
                for r, t, tg in zip(pairs["anchor_row_id"], pairs["anchor_text"], targets)]
    return corpus, targets, excluded


def ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each query's target rank: 1 + the candidates scoring strictly higher (ties go to
    the target); a target not retrieved at all (score not finite) ranks past every row.
    `scores`: [queries, corpus] with dropped rows at -inf."""
    rows = np.arange(len(scores))
    target = scores[rows, targets]
    out = 1 + (scores > target[:, None]).sum(axis=1)
    return np.where(np.isfinite(target), out, scores.shape[1] + 1)


def recall(ranked: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """recall@k for each k: the share of targets ranked within the top k."""
    return {f"recall@{k}": float((ranked <= k).mean()) for k in ks}
