"""Hybrid search: one ranking from the dense and lexical retrievers' ranked lists.

Two ways, both over each retriever's top `depth` candidates:

- ``rrf`` (default): reciprocal-rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009),
  score = sum over retrievers of weight / (k + rank), k = 60 as in the paper. Ranks only, so
  it needs no score calibration; a note one retriever did not return adds nothing from it.
- ``weighted``: score = sum of weight x the retriever's score min-max scaled over the
  candidates; a candidate one retriever did not return gets that retriever's exact score,
  so a note ranked 101st is not scored as if it did not match at all.
- ``zscore``: the same sum with each retriever's scores standardised (minus their mean,
  over their standard deviation) over the candidates: one outlying score does not squash
  the rest, as it does under min-max (Lee, 1997; Kamps et al.).

No one setting suits every corpus: equal-weight RRF loses to the better retriever wherever
one is much stronger (BENCHMARKS, "Retrieval"). An index chooses its own on its own notes
(`mimicsearch.calibrate`), and mode "auto" uses that choice.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

MODES = ("dense", "lexical", "hybrid")
AUTO = "auto"  # the setting the index calibrated: one of MODES, with its fusion
METHODS = ("rrf", "weighted", "zscore")


@dataclass(frozen=True)
class Fusion:
    """How `hybrid` combines the dense and lexical retrievers."""

    method: str = "rrf"
    k: int = 60  # RRF's constant: larger flattens the gap between ranks
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    depth: int = 100  # candidates taken from each retriever (at least the k asked for)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"fusion method {self.method!r}; valid: {list(METHODS)}")
        if self.k < 1:
            raise ValueError(f"RRF k={self.k}: must be >= 1")
        if self.depth < 1:
            raise ValueError(f"fusion depth={self.depth}: must be >= 1")
        for name in ("dense_weight", "lexical_weight"):
            w = getattr(self, name)
            if not (np.isfinite(w) and w >= 0):
                raise ValueError(f"{name}={w}: must be a finite number >= 0")
        if self.dense_weight == self.lexical_weight == 0:
            raise ValueError("both fusion weights are 0: give at least one retriever weight")

    def weight(self, retriever: str) -> float:
        return self.dense_weight if retriever == "dense" else self.lexical_weight

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        """A short name, as calibration tables and `--explain` print it."""
        w = f"{self.dense_weight:g}/{self.lexical_weight:g}"
        k = f" k={self.k}" if self.method == "rrf" else ""
        return f"{self.method}{k} {w}" + (f" depth={self.depth}" if self.depth != 100 else "")


def check_mode(mode: str, available: Sequence[str]) -> str:
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}; valid: {list(MODES)}")
    if mode not in available:
        raise ValueError(f"mode {mode!r} needs the index's lexical part and this index has "
                         f"none (built with --no-full-text or --no-lexical, or before "
                         f"mimicsearch kept one); modes here: {list(available)}; rebuild "
                         "with `build-index` to search by words")
    return mode


Ranked = Sequence[tuple[Hashable, float]]  # (key, score), best first


@dataclass(frozen=True)
class Fused:
    key: Hashable
    score: float
    # retriever -> (rank or None where not in its top depth, score or None where unknown)
    retrievers: dict


def fuse(lists: dict[str, Ranked], fusion: Fusion,
         exact: dict[str, Callable[[list], np.ndarray]] | None = None,
         limit: int | None = None) -> list[Fused]:
    """One ranking of every candidate of `lists` (retriever -> its ranked list), best first
    (the first `limit` only, where given); ties go to the key seen first (the dense list's
    order, then the lexical one's). `exact[retriever](keys)` scores keys that retriever
    did not return (weighted and zscore fusion)."""
    pos: dict[Hashable, int] = {}
    for ranked in lists.values():
        for key, _ in ranked:
            pos.setdefault(key, len(pos))
    order = list(pos)
    n = len(order)
    ranks: dict[str, np.ndarray] = {}
    scores: dict[str, np.ndarray] = {}
    for name, ranked in lists.items():
        at = np.fromiter((pos[key] for key, _ in ranked), np.int64, len(ranked))
        ranks[name] = np.zeros(n, np.int64)
        ranks[name][at] = np.arange(1, len(ranked) + 1)
        scores[name] = np.full(n, np.nan)
        scores[name][at] = np.fromiter((s for _, s in ranked), np.float64, len(ranked))
    total = np.zeros(n)
    for name in lists:
        w = fusion.weight(name)
        if fusion.method == "rrf":
            r = ranks[name]
            total += np.where(r > 0, w / (fusion.k + np.maximum(r, 1)), 0.0)
            continue
        s = scores[name]
        missing = np.flatnonzero(np.isnan(s))
        if len(missing) and exact and name in exact:
            s[missing] = np.asarray(exact[name]([order[i] for i in missing]), np.float64)
        total += w * np.nan_to_num(_normalised(s, fusion.method), nan=0.0)
    best = np.lexsort((np.arange(n), -total))[:limit]
    out = []
    for i in best:
        out.append(Fused(order[i], float(total[i]), {
            name: (int(ranks[name][i]) or None,
                   None if np.isnan(scores[name][i]) else float(scores[name][i]))
            for name in lists}))
    return out


def _normalised(s: np.ndarray, method: str) -> np.ndarray:
    """Scores on a common scale over the candidates (NaN: unknown); all equal: no
    information, so zeros."""
    known = s[~np.isnan(s)]
    if len(known) == 0:
        return np.zeros_like(s)
    if method == "zscore":
        sd = known.std()
        return (s - known.mean()) / sd if sd > 0 else np.zeros_like(s)
    lo, hi = known.min(), known.max()
    return (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)
