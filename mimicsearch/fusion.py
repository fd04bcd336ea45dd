"""Hybrid search: one ranking from the dense and lexical retrievers' ranked lists.

Two ways, both over each retriever's top `depth` candidates:

- ``rrf`` (default): reciprocal-rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009),
  score = sum over retrievers of weight / (k + rank), k = 60 as in the paper. Ranks only, so
  it needs no score calibration; a note one retriever did not return adds nothing from it.
- ``weighted``: score = sum of weight x the retriever's score min-max scaled over the
  candidates; a candidate one retriever did not return gets that retriever's exact score,
  so a note ranked 101st is not scored as if it did not match at all.

Equal-weight RRF is no better than the better retriever on this project's data (BENCHMARKS,
"Retrieval"): choose the settings on validation pairs, as `mimicsearch evaluate` does.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

MODES = ("dense", "lexical", "hybrid")
METHODS = ("rrf", "weighted")


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
         exact: dict[str, Callable[[list], np.ndarray]] | None = None) -> list[Fused]:
    """One ranking of every candidate of `lists` (retriever -> its ranked list), best first;
    ties go to the key seen first (the dense list's order, then the lexical one's).
    `exact[retriever](keys)` scores keys that retriever did not return (weighted fusion)."""
    keys: dict[Hashable, None] = {}
    ranks: dict[str, dict] = {}
    scores: dict[str, dict] = {}
    for name, ranked in lists.items():
        ranks[name] = {key: i + 1 for i, (key, _) in enumerate(ranked)}
        scores[name] = {key: float(s) for key, s in ranked}
        keys.update(dict.fromkeys(ranks[name]))
    order = list(keys)
    total = np.zeros(len(order))
    if fusion.method == "rrf":
        for name in lists:
            w = fusion.weight(name)
            total += [w / (fusion.k + ranks[name][key]) if key in ranks[name] else 0.0
                      for key in order]
    else:
        for name in lists:
            missing = [key for key in order if key not in scores[name]]
            if missing and exact and name in exact:
                scores[name].update(zip(missing, map(float, exact[name](missing))))
            s = np.array([scores[name].get(key, np.nan) for key in order], dtype=np.float64)
            known = s[~np.isnan(s)]
            lo, hi = (known.min(), known.max()) if len(known) else (0.0, 0.0)
            scaled = (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)  # no information
            total += fusion.weight(name) * np.nan_to_num(scaled, nan=0.0)
    best = sorted(range(len(order)), key=lambda i: (-total[i], i))
    return [Fused(order[i], float(total[i]),
                  {name: (ranks[name].get(order[i]), scores[name].get(order[i]))
                   for name in lists}) for i in best]
