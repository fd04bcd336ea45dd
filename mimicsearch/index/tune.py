"""Recall tuning: measure recall@10 against exact neighbours and pick the search knob."""
from __future__ import annotations

import time

import numpy as np

from .faiss_ops import EF_MAX
from .loaded import NoteIndex
from .manifest import Quality

EVAL_QUERIES = 200
EVAL_K = 10
NPROBE_LADDER = tuple(2 ** i for i in range(17))
EF_LADDER = (16, 32, 64, 128, 256, 512, 1024, EF_MAX)


def measure_quality(index: NoteIndex, queries: np.ndarray, query_rows: np.ndarray,
                    exact: np.ndarray, recall_target: float, k: int = EVAL_K) -> Quality:
    """Recall@k against exact neighbours, for each setting of the search knob; keep the
    cheapest setting reaching the target (the query's own row is not counted)."""
    k = min(k, max(1, index.ntotal - 1))
    if index.knob is None:
        settings = [{}]
    else:
        name, top = index.knob
        ladder = NPROBE_LADDER if name == "nprobe" else EF_LADDER
        if name == "efSearch":
            top = EF_LADDER[-1]  # beyond this HNSW is slower than exact search
        settings = [{name: v} for v in ladder if v < top] + [{name: top}]
    truth = [_without(e, r, k) for e, r in zip(exact, query_rows)]
    curve, chosen = [], None
    for params in settings:
        index.set_search_params(params)
        _, I = index.search(queries, k + 1)
        per_query = [len(set(_without(a, r, k)) & set(t)) / len(t)
                     for a, r, t in zip(I, query_rows, truth) if t]
        recall = float(np.mean(per_query)) if per_query else 1.0  # one vector: nothing to miss
        curve.append({**params, "recall": round(recall, 4)})
        if recall >= recall_target:
            chosen = (params, recall)
            break
    if chosen is None:
        best = max(curve, key=lambda c: c["recall"])
        chosen = ({name: v for name, v in best.items() if name != "recall"}, best["recall"])
    params, recall = chosen
    index.set_search_params(params)
    times = []
    for q in queries[: min(len(queries), 100)]:
        t = time.perf_counter()
        index.search(q[None], k)
        times.append(time.perf_counter() - t)
    return Quality(round(recall, 4), recall_target, recall >= recall_target, len(queries), k,
                   round(1000 * float(np.median(times)), 4), params, tuple(curve),
                   index.ntotal)


def _without(rows: np.ndarray, row: int, k: int) -> list[int]:
    return [int(r) for r in rows if r != row and r >= 0][:k]

