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
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from memos.errors import Unavailable
from memos.ids import ID_PATTERN

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
    """A queue drained in batches by ``workers`` threads, each calling ``handle(batch)``.

    Several workers suit a stage whose ``handle`` runs in parallel (the embedding stage, one
    worker per model lane); batches then carry no order between them.
    """

    def __init__(
        self,
        name: str,
        handle: Callable[[list[Pending[T, R]]], None],
        *,
        max_rows: int,
        max_wait_s: float,
        workers: int = 1,
    ) -> None:
        self._handle = handle
        self._max_rows = max(1, max_rows)
        self._max_wait_s = max(0.0, max_wait_s)
        self._queue: deque[Pending[T, R]] = deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self.batches = 0
        self._threads = [
            threading.Thread(target=self._run, name=name if i == 0 else f"{name}-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    @property
    def thread(self) -> threading.Thread:
        """The first (with one worker, the only) thread."""
        return self._threads[0]

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
            if self._closed and not any(t.is_alive() for t in self._threads):
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
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _take(self) -> list[Pending[T, R]] | None:
        with self._cond:
            while True:
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
                if self._queue:
                    break
                # Another worker took what was queued while this one waited for more.
            batch = [self._queue.popleft()]
            rows = batch[0].rows
            while self._queue and rows + self._queue[0].rows <= self._max_rows:
                item = self._queue.popleft()
                rows += item.rows
                batch.append(item)
            self._queued_rows -= rows
            self.batches += 1
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._handle(batch)
            except BaseException as exc:
                name = threading.current_thread().name
                log.exception("%s: a batch of %d items failed", name, len(batch))
                for pending in batch:
                    pending.fail(exc)


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TO_BASE32 = str.maketrans(_CROCKFORD, "0123456789ABCDEFGHIJKLMNOPQRSTUV")


def id_ms(cube_id: str) -> int | None:
    """The millisecond a ULID was made (its first 10 characters), or None for another id."""
    if not ID_PATTERN.match(cube_id):
        return None
    return int(cube_id[:10].translate(_TO_BASE32), 32)


class RecentIds:
    """The (tenant, id) keys this store committed lately, so a put of a newly made id needs no
    lookup in the table (a lookup scans every row that the ``id`` index does not cover yet, and
    so grows with the table: it was most of a group commit's time at 100k cubes).

    A ULID carries the millisecond it was made. An id made after this store opened and at most
    ``window_s`` ago can be in the table only if a put committed it after it was made: this
    store's commit thread, which recorded it here, or another process writing the same table,
    which would need the same 80 random bits (ids are made by the daemon, never taken from a
    client). Any other id is looked up in the table, as before.
    """

    def __init__(self, window_s: float, now_ms: int) -> None:
        self._window_ms = int(window_s * 1000)
        self._opened_ms = now_ms
        self._keys: set[tuple[str, str]] = set()
        self._order: deque[tuple[int, tuple[str, str]]] = deque()

    def vouches(self, key: tuple[str, str], now_ms: int) -> bool:
        """True when ``key in self`` is the whole truth about whether the table holds it."""
        made = id_ms(key[1])
        return made is not None and self._opened_ms < made and now_ms - made <= self._window_ms

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, keys: Sequence[tuple[str, str]], now_ms: int) -> None:
        for key in keys:
            made = id_ms(key[1])
            if made is not None and self._opened_ms < made and key not in self._keys:
                self._keys.add(key)
                self._order.append((made, key))
        # Commits come roughly in id order: an entry behind a newer one waits a little longer.
        while self._order and now_ms - self._order[0][0] > self._window_ms:
            self._keys.discard(self._order.popleft()[1])

    def discard(self, keys: Sequence[tuple[str, str]]) -> None:
        """Forget deleted keys (their ids may be put again)."""
        self._keys.difference_update(keys)
