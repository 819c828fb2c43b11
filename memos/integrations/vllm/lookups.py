"""Scheduler side: non-blocking Lookups to the daemon, pinned until the worker loads.

vLLM's scheduler asks, for each waiting request, how many tokens the connector can load, and
accepts "not yet" (``None``). A Lookup runs in a small thread pool; the scheduler waits for it
inline, up to a few milliseconds per scheduler step in all (a localhost round trip usually
fits), then moves on and asks again on a later step, where it waits again within that step's
allowance. Waiting, not answering "not yet" at once, matters when the Lookup is late: vLLM
asks again at once, in an engine step that has nothing to run, hundreds of times, and that
busy loop takes the cores the Lookup's own thread and the daemon need (measured on 2 cores,
a stored 2048-token prefix, Lookups later than a 1 ms allowance: 75-200 empty steps and 46 ms
to first token asking back at once, 1-2 steps and 37 ms waiting each step). The allowance is
per step, whatever the number of waiting requests, so a daemon that hangs slows the engine's
steps by at most that much, until the Lookups' deadline. The answer is cached per request; a
Lookup that fails or outlives its deadline counts as a miss, so a daemon that is down or slow
never holds a request back for long and never fails it.

A Lookup pins the matched chunks under a lease, so the daemon cannot evict them before the
worker's Fetch (which names the lease, and so releases it). A lease the engine ends up not
using (the local prefix cache already covered the tokens, or the request finished) is
released in the background; if that fails too, it expires on its own.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from memos.client_activation import ActivationClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Hit:
    """What the daemon promised: ``blocks`` leading blocks, pinned under ``leases``
    (one per tensor-parallel rank, "" where nothing was pinned)."""

    blocks: int
    leases: tuple[str, ...]
    # Per rank: the shared files of the leading pinned blocks, (path, size), held under that
    # rank's lease: the worker reads them with no Fetch (empty without a shared directory).
    files: tuple[tuple[tuple[str, int], ...], ...] = ()


MISS = Hit(0, ())


class _Pending:
    __slots__ = ("deadline", "future")

    def __init__(self, future: Future[Hit], deadline: float) -> None:
        self.future = future
        self.deadline = deadline


class Lookups:
    """Cached, non-blocking Lookups keyed by request id."""

    def __init__(
        self,
        client: Callable[[], ActivationClient],
        *,
        inline_s: float,
        timeout_s: float,
        lease_ms: int,
        workers: int = 4,
    ) -> None:
        self._client = client
        self._inline_s = inline_s
        self._timeout_s = timeout_s
        self._lease_ms = lease_ms
        self._workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="memos-lookup")
        self._pending: dict[str, _Pending] = {}
        self._answers: dict[str, Hit] = {}
        self._wait_left = inline_s  # what this scheduler step may still wait for answers
        self.lookups = self.failures = self.timeouts = 0

    def get(
        self,
        request_id: str,
        chains: Sequence[Sequence[bytes]],
        *,
        cube_ids: Sequence[str] = (),
        hint: str | None = None,
        shared_dir_id: Callable[[], str] | None = None,
        wait: bool = True,
    ) -> Hit | None:
        """The hit for ``request_id`` (one key chain per rank), or None while pending.

        ``cube_ids`` and ``hint`` ride on the first rank's Lookup only: the daemon counts them
        as one read of those cubes per request. ``shared_dir_id`` reads the id of the engine's
        mount of the daemon's shared directory (in the Lookup's thread), to get the files of
        the pinned blocks. ``wait=False``: only start the Lookup (or take its answer).
        """
        answer = self._answers.get(request_id)
        if answer is not None:
            return answer
        pending = self._pending.get(request_id)
        if pending is None:
            self.lookups += 1
            future = self._pool.submit(
                self._lookup, [list(c) for c in chains], tuple(cube_ids), hint, shared_dir_id
            )
            pending = _Pending(future, time.monotonic() + self._timeout_s)
            self._pending[request_id] = pending
        if wait:
            self._wait(pending)
        if not pending.future.done():
            if time.monotonic() < pending.deadline:
                return None
            # Too slow: a miss. A late answer's lease is released when it arrives.
            self.timeouts += 1
            pending.future.add_done_callback(self._release_late)
            return self._settle(request_id, MISS)
        try:
            hit = pending.future.result()
        except Exception as exc:  # any failure of the daemon is a miss
            self.failures += 1
            log.warning("memos connector: lookup failed (%s): recomputing", _brief(exc))
            hit = MISS
        return self._settle(request_id, hit)

    def busy(self) -> bool:
        """Whether Lookups are queueing for the pool's threads."""
        return len(self._pending) >= self._workers

    def new_step(self) -> None:
        """A new scheduler step: it may wait ``inline_s`` again for answers."""
        self._wait_left = self._inline_s

    def _wait(self, pending: _Pending) -> None:
        started = time.monotonic()
        # Never past the Lookup's deadline: a Lookup that late is a timeout.
        wait = min(self._wait_left, pending.deadline - started)
        if wait <= 0 or pending.future.done():
            return
        # A failure or a timeout is collected by the caller (a miss, or "not yet").
        with contextlib.suppress(Exception):
            pending.future.result(timeout=wait)
        self._wait_left -= time.monotonic() - started

    def answer(self, request_id: str) -> Hit | None:
        """The settled answer for ``request_id``, if any."""
        return self._answers.get(request_id)

    def _settle(self, request_id: str, hit: Hit) -> Hit:
        self._pending.pop(request_id, None)
        self._answers[request_id] = hit
        return hit

    def _lookup(
        self,
        chains: list[list[bytes]],
        cube_ids: tuple[str, ...],
        hint: str | None,
        shared_dir_id: Callable[[], str] | None,
    ) -> Hit:
        client = self._client()
        shared_id = shared_dir_id() if shared_dir_id is not None else ""
        leases: list[str] = []
        files: list[tuple[tuple[str, int], ...]] = []
        blocks: int | None = None
        try:
            for rank, keys in enumerate(chains):
                first = rank == 0
                found = client.lookup(
                    keys,
                    pin=True,
                    lease_ms=self._lease_ms,
                    cube_ids=cube_ids if first else (),
                    hint=hint if first else None,
                    shared_dir_id=shared_id,
                )
                leases.append(found.lease_id)
                files.append(tuple((f.path, f.size) for f in found.files))
                blocks = found.pinned if blocks is None else min(blocks, found.pinned)
        except BaseException:
            self._release(leases)
            raise
        return Hit(blocks or 0, tuple(leases), tuple(files) if any(files) else ())

    def forget(self, request_id: str, *, release: bool) -> None:
        """Drop a request's answer; with ``release``, unpin what it had pinned."""
        hit = self._answers.pop(request_id, None)
        pending = self._pending.pop(request_id, None)
        if release and pending is not None:
            pending.future.add_done_callback(self._release_late)
        if release and hit is not None and any(hit.leases):
            self._pool.submit(self._release, hit.leases)

    def release(self, leases: Sequence[str]) -> None:
        """Unpin ``leases`` in the background (the blocks they held are loaded)."""
        if any(leases):
            self._pool.submit(self._release, leases)

    def _release_late(self, future: Future[Hit]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        leases = future.result().leases
        if any(leases):
            self._pool.submit(self._release, leases)

    def _release(self, leases: Sequence[str]) -> None:
        try:
            client = self._client()
            for lease in leases:
                if lease:
                    client.release(lease)
        except Exception as exc:  # the lease expires by itself
            log.debug("memos connector: release failed (%s)", _brief(exc))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _brief(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
