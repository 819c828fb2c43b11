"""Group commit: one thread drains a queue in batches, so concurrent writers share one commit.

A caller submits an item and blocks on its future. The thread takes everything queued (up to
``max_rows`` rows), waiting up to ``max_wait_s`` for more when the queue holds less, and hands
the batch to ``handle``, which resolves each future once its data is committed. When ``handle``
raises, every future of that batch that is still open fails with the error: one failed commit
fails exactly the calls it carried.

Stages chain: the plaintext store runs one batcher that embeds (the model stays busy) feeding
another that commits (LanceDB stays busy), so embedding batch n+1 overlaps committing batch n.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

from memos.errors import Unavailable

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class Pending(Generic[T, R]):
    """One submitted item, its size in rows, and the future its caller waits on."""

    __slots__ = ("future", "item", "rows")

    def __init__(self, item: T, rows: int) -> None:
        self.item = item
        self.rows = rows
        self.future: Future[R] = Future()

    def resolve(self, result: R) -> None:
        if not self.future.done():
            self.future.set_result(result)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class Batcher(Generic[T, R]):
    """A queue drained in batches by one thread that calls ``handle(batch)``."""

    def __init__(
        self,
        name: str,
        handle: Callable[[list[Pending[T, R]]], None],
        *,
        max_rows: int,
        max_wait_s: float,
    ) -> None:
        self._handle = handle
        self._max_rows = max(1, max_rows)
        self._max_wait_s = max(0.0, max_wait_s)
        self._queue: deque[Pending[T, R]] = deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self.batches = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def submit(self, item: T, rows: int = 1) -> Pending[T, R]:
        pending: Pending[T, R] = Pending(item, rows)
        with self._cond:
            if self._closed:
                raise Unavailable("the plaintext store is closed")
            self._queue.append(pending)
            self._queued_rows += rows
            self._cond.notify()
        return pending

    def forward(self, pending: Pending[T, R]) -> None:
        """Queue an item whose future already exists (handed over by an earlier stage)."""
        with self._cond:
            if self._closed and not self._thread.is_alive():
                pending.fail(Unavailable("the plaintext store is closed"))
                return
            self._queue.append(pending)
            self._queued_rows += pending.rows
            self._cond.notify()

    def close(self, timeout: float | None = None) -> None:
        """Refuse new items, let the thread finish what is queued, and wait for it."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _take(self) -> list[Pending[T, R]] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            if self._queued_rows < self._max_rows and self._max_wait_s > 0 and not self._closed:
                deadline = time.monotonic() + self._max_wait_s
                while self._queued_rows < self._max_rows and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            batch = [self._queue.popleft()]
            rows = batch[0].rows
            while self._queue and rows + self._queue[0].rows <= self._max_rows:
                item = self._queue.popleft()
                rows += item.rows
                batch.append(item)
            self._queued_rows -= rows
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            self.batches += 1
            try:
                self._handle(batch)
            except BaseException as exc:
                log.exception("%s: a batch of %d items failed", self._thread.name, len(batch))
                for pending in batch:
                    pending.fail(exc)
