"""Batches for in-batch negatives: by default no two pairs of one patient share a batch, because
one patient's notes are related and would be scored as each other's false negatives."""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np


class PatientBatchSampler:
    """Seeded batches of pair indices; `set_epoch` reshuffles reproducibly (so resume replays)."""

    def __init__(self, subject_ids: Sequence[int], batch_size: int, seed: int = 0,
                 distinct_patients: bool = True, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.subject_ids = np.asarray(subject_ids)
        self.batch_size = batch_size
        self.seed = seed
        self.distinct_patients = distinct_patients
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if not self.distinct_patients:
            order = rng.permutation(len(self.subject_ids)).tolist()
            batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        else:
            batches = _distinct_batches(self.subject_ids, self.batch_size, rng)
        for batch in batches:
            if len(batch) == self.batch_size or (not self.drop_last and len(batch) > 1):
                yield batch

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _distinct_batches(subjects: np.ndarray, batch_size: int,
                      rng: np.random.Generator) -> list[list[int]]:
    """Spread each patient's pairs over the epoch (k-th pair of a patient near position k/n of
    the order), then fill batches greedily, deferring a pair whose patient is already in the
    batch to a later one."""
    n = len(subjects)
    order = rng.permutation(n)
    _, inverse, counts = np.unique(subjects[order], return_inverse=True, return_counts=True)
    rank = np.zeros(n)
    seen: dict[int, int] = {}
    for pos, g in enumerate(inverse):
        rank[pos] = seen.get(g, 0)
        seen[g] = rank[pos] + 1
    key = (rank + rng.random(n)) / counts[inverse]  # position within the epoch, in [0, 1)
    queue = deque(order[np.argsort(key, kind="stable")].tolist())
    batches = []
    while queue:
        batch, members, deferred = [], set(), []
        while queue and len(batch) < batch_size:
            i = queue.popleft()
            if subjects[i] in members:
                deferred.append(i)
            else:
                batch.append(i)
                members.add(subjects[i])
        queue.extendleft(reversed(deferred))
        batches.append(batch)
    return batches
