"""Group commit: requests that queued up while the engine was busy are judged together.

Under a burst every notification that is not an exact repeat needs the
state-dir lock and an fsync'd write. Handled one by one, the last of a wave of
them waits for all the writes before it. ``Batcher`` hands the engine all the
items that arrived meanwhile in one call, so they share one lock acquisition,
one write per touched shard, and writes that overlap; each caller still gets
its own result, only after that result is durable.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH = 64
"""Items per call: bounds the time one batch holds the state-dir lock."""


class Batcher(Generic[T, R]):
    def __init__(self, run: Callable[[list[T]], Sequence[R | BaseException]],
                 executor: Executor) -> None:
        self._run = run
        self._executor = executor
        self._lock = threading.Lock()
        self._queue: list[tuple[T, Future[R]]] = []
        self._draining = False
        self._closed = False

    async def submit(self, item: T) -> R:
        """Queue ``item``; resolves with its own result (or raises its own error)."""
        future: Future[R] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine is shutting down")
            self._queue.append((item, future))
            start = not self._draining
            self._draining = True
        if start:
            self._executor.submit(self._drain)
        return await asyncio.wrap_future(future)

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                if not batch:
                    self._draining = False
                    return
            try:
                results: Sequence[R | BaseException] = self._run([item for item, _ in batch])
            except BaseException as exc:  # every waiter must hear of it, whatever it is
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def close(self) -> None:
        """Refuse new items and fail those still queued (nothing of theirs was decided)."""
        with self._lock:
            self._closed = True
            pending, self._queue = self._queue, []
        for _, future in pending:
            future.set_exception(RuntimeError("the engine shut down before judging this"))
