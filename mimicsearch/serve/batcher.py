"""Coalescing concurrent embedding work into encoder batches.

Requests queue their texts; one worker takes the first waiting request, gathers whatever
else arrives within `wait_s` (stopping at `max_batch` texts or the encoder's token budget),
encodes each (prompt, dim) group in one call on the encoder thread, and hands every request
its rows. Under load the queue fills while a batch runs, so the next batch is full at once;
alone, a request waits at most `wait_s`.
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
    tokens: int = 0


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

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def encode(self, texts: list[str], prompt: str | None,
                     dim: int | None) -> tuple[np.ndarray, list[int]]:
        future = asyncio.get_running_loop().create_future()
        tokens = sum(min(len(t) // CHARS_PER_TOKEN + 2, self.max_length) for t in texts)
        await self._queue.put(_Job(list(texts), prompt, dim, future, tokens))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            size, tokens = len(jobs[0].texts), jobs[0].tokens
            deadline = loop.time() + self.wait_s
            while self.enabled and size < self.max_batch and tokens < self.token_budget:
                try:
                    job = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), left)
                    except TimeoutError:
                        break
                jobs.append(job)
                size += len(job.texts)
                tokens += job.tokens
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
        encoder = self._encoder()
        return encoder.encode(texts, prompt=prompt, dim=dim), encoder.token_counts(texts, prompt)
