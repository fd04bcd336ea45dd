"""Coalescing concurrent embedding work into encoder batches.

Requests queue their texts; one worker takes the first waiting request, gathers whatever
else is queued (stopping at `max_batch` texts or `token_budget` padded tokens: texts times
the longest one's estimated tokens, since a batch is padded to its longest), encodes
each (prompt, dim) group in one call on the encoder thread, and hands every request its
rows. Under load the queue fills while a batch runs, so the next batch forms at once. A
batch waits (at most `wait_s`) only for requests already inside the server and on their
way to the encoder (`coming()`), so a lone request never waits.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

CHARS_PER_TOKEN = 4  # a cheap estimate for the budget; the encoder counts exactly


@dataclass
class _Job:
    texts: list[str]
    prompt: str | None
    dim: int | None
    future: asyncio.Future
    longest: int = 0  # estimated tokens of its longest text


class _Ticket:
    arrived = False

    def arrive(self, batcher: Batcher) -> None:
        if not self.arrived:
            self.arrived = True
            batcher._coming -= 1


class Batcher:
    """`await encode(texts, prompt, dim)` -> (float32 [n, dim], tokens per text)."""

    def __init__(self, encoder: Callable, executor: ThreadPoolExecutor, *, wait_s: float,
                 max_batch: int, token_budget: int, max_length: int, enabled: bool = True,
                 on_batch: Callable[[int, int], None] | None = None):
        self._encoder = encoder  # () -> Encoder, called on the encoder thread
        self._executor = executor
        self.wait_s, self.max_batch = wait_s, max_batch
        self.token_budget, self.max_length = token_budget, max_length
        self.enabled = enabled
        self._on_batch = on_batch or (lambda texts, requests: None)
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._coming = 0  # requests being handled that will queue texts soon

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def coming(self):
        """Around a request that will (probably) encode: until its texts are queued (or it
        ends without), a gathering batch may wait for it. Yields the ticket to pass to
        `encode`."""
        ticket = _Ticket()
        self._coming += 1
        try:
            yield ticket
        finally:
            ticket.arrive(self)

    async def encode(self, texts: list[str], prompt: str | None, dim: int | None,
                     ticket: _Ticket | None = None) -> tuple[np.ndarray, list[int]]:
        if ticket is not None:
            ticket.arrive(self)
        future = asyncio.get_running_loop().create_future()
        longest = max((min(len(t) // CHARS_PER_TOKEN + 2, self.max_length) for t in texts),
                      default=1)
        await self._queue.put(_Job(list(texts), prompt, dim, future, longest))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Job | None = None  # a job that did not fit the last batch: the next one's first
        while True:
            jobs = [carry if carry is not None else await self._queue.get()]
            carry = None
            size, longest = len(jobs[0].texts), jobs[0].longest
            deadline = loop.time() + self.wait_s
            while self.enabled and size < self.max_batch and \
                    (size + 1) * longest <= self.token_budget:
                try:
                    job = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0 or self._coming <= 0:  # nobody else on the way
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), left)
                    except TimeoutError:
                        break
                grown = size + len(job.texts)
                if grown > self.max_batch or \
                        grown * max(longest, job.longest) > self.token_budget:
                    carry = job  # padded to the longest text, it would not fit
                    break
                jobs.append(job)
                size, longest = grown, max(longest, job.longest)
            jobs = [j for j in jobs if not j.future.done()]  # clients that went away
            groups: dict[tuple, list[_Job]] = {}
            for j in jobs:
                groups.setdefault((j.prompt, j.dim), []).append(j)
            for (prompt, dim), group in groups.items():
                texts = [t for j in group for t in j.texts]
                try:
                    vectors, counts = await loop.run_in_executor(
                        self._executor, self._encode, texts, prompt, dim)
                except Exception as e:  # noqa: BLE001  (handed to each request: its 4xx or 500)
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(e)
                    continue
                self._on_batch(len(texts), len(group))
                start = 0
                for j in group:
                    end = start + len(j.texts)
                    if not j.future.done():
                        j.future.set_result((vectors[start:end], counts[start:end]))
                    start = end

    def _encode(self, texts, prompt, dim):
        encoded = self._encoder().encode_detailed(texts, prompt=prompt, dim=dim)
        return encoded.vectors, encoded.tokens.tolist()
