"""Scheduler side: non-blocking Lookups to the daemon, pinned until the worker loads.

vLLM's scheduler asks, for each waiting request, how many tokens the connector can load, and
accepts "not yet" (``None``). Over the daemon's same-host socket, the scheduler's own thread
sends the Lookup (as the request arrives) and reads the answer when it plans the request: no
thread between, so the daemon works on it while vLLM goes on with its Python (a helper
thread would wait for the GIL until the scheduler blocks, then wake it: 0.13 ms of a 0.6 ms
round trip, measured). Over gRPC, a Lookup runs in a small thread pool. Either way the
scheduler waits for the answer inline, up to a few milliseconds per scheduler step in all (a
localhost round trip usually fits), then moves on and asks again on a later step, where it
waits again within that step's allowance. Waiting, not answering "not yet" at once, matters
when the Lookup is late: vLLM asks again at once, in an engine step that has nothing to
run, hundreds of times, and that busy loop takes the cores the Lookup's own thread and the
daemon need (measured on 2 cores,
a stored 2048-token prefix, Lookups later than a 1 ms allowance: 75-200 empty steps and 46 ms
to first token asking back at once, 1-2 steps and 37 ms waiting each step). The allowance is
per step, whatever the number of waiting requests, so a daemon that hangs slows the engine's
steps by at most that much, until the Lookups' deadline. The answer is cached per request; a
Lookup that fails or outlives its deadline counts as a miss, so a daemon that is down or slow
never holds a request back for long and never fails it.

A Lookup pins the matched chunks under a lease, so the daemon cannot evict them before the
worker's Fetch (which names the lease, and so releases it). A lease the engine ends up not
using (the local prefix cache already covered the tokens, or the request finished) is
released without waiting for the daemon's reply (sent on the socket, the reply read on a
later call; over gRPC, in the pool); if that fails too, it expires on its own.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from memos.client_activation import ActivationClient, Lookup, SentLookup
from memos.client_local import NoLocalSocket, Sent

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
    __slots__ = ("answers", "deadline", "future", "sent")

    def __init__(
        self, future: Future[Hit], deadline: float, sent: list[SentLookup] | None = None
    ) -> None:
        self.future = future
        self.deadline = deadline
        # Sent on the socket, one per rank: their answers are read by whoever waits (the
        # scheduler's thread; the pool's once the scheduler gave up on them). None: the
        # pool's thread makes the calls and completes ``future``.
        self.sent = sent
        self.answers: list[Lookup] = []


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
        self._releases: list[Sent[Any]] = []  # sent on the socket, replies not read yet
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
        mount of the daemon's shared directory (in whichever thread sends the Lookup), to get
        the files of the pinned blocks. ``wait=False``: only start the Lookup (or take its answer).
        """
        answer = self._answers.get(request_id)
        if answer is not None:
            return answer
        pending = self._pending.get(request_id)
        if pending is None:
            self.lookups += 1
            pending = self._start([list(c) for c in chains], tuple(cube_ids), hint, shared_dir_id)
            self._pending[request_id] = pending
        if wait:
            self._wait(pending)
        if not pending.future.done():
            if time.monotonic() < pending.deadline:
                return None
            # Too slow: a miss. A late answer's lease is released when it arrives.
            self.timeouts += 1
            self._let_go(pending)
            return self._settle(request_id, MISS)
        try:
            hit = pending.future.result()
        except Exception as exc:  # any failure of the daemon is a miss
            self.failures += 1
            log.warning("memos connector: lookup failed (%s): recomputing", _brief(exc))
            hit = MISS
        return self._settle(request_id, hit)

    def busy(self) -> bool:
        """Whether as many Lookups are out as the pool has threads (an engine that is backed
        up then asks as it schedules, not as requests arrive)."""
        return len(self._pending) >= self._workers

    def new_step(self) -> None:
        """A new scheduler step: it may wait ``inline_s`` again for answers."""
        self._wait_left = self._inline_s

    def _start(
        self,
        chains: list[list[bytes]],
        cube_ids: tuple[str, ...],
        hint: str | None,
        shared_dir_id: Callable[[], str] | None,
    ) -> _Pending:
        """Send the Lookup on the socket from this thread, or hand it to the pool."""
        deadline = time.monotonic() + self._timeout_s
        sent: list[SentLookup] = []
        try:
            client = self._client()
            shared_id = shared_dir_id() if shared_dir_id is not None else ""
            for rank, keys in enumerate(chains):
                sent.append(
                    client.send_lookup(keys, **self._lookup_args(rank, cube_ids, hint, shared_id))
                )
        except NoLocalSocket:
            if sent:  # a later rank's socket went away: the pool reads what was sent
                self._pool.submit(self._settle_sent, sent)
            future = self._pool.submit(self._lookup, chains, cube_ids, hint, shared_dir_id)
            return _Pending(future, deadline)
        except Exception as exc:  # a failed Lookup is a miss, as in the pool
            if sent:
                self._pool.submit(self._settle_sent, sent)
            failed: Future[Hit] = Future()
            failed.set_exception(exc)
            return _Pending(failed, deadline)
        return _Pending(Future(), deadline, sent)

    def _lookup_args(
        self, rank: int, cube_ids: tuple[str, ...], hint: str | None, shared_id: str
    ) -> dict[str, Any]:
        first = rank == 0
        return {
            "pin": True,
            "lease_ms": self._lease_ms,
            "cube_ids": cube_ids if first else (),
            "hint": hint if first else None,
            "shared_dir_id": shared_id,
        }

    def _wait(self, pending: _Pending) -> None:
        started = time.monotonic()
        # Never past the Lookup's deadline: a Lookup that late is a timeout.
        wait = min(self._wait_left, pending.deadline - started)
        if pending.future.done():
            return
        if pending.sent is not None:
            self._collect(pending, max(0.0, wait), drain=True)
        elif wait > 0:
            # A failure or a timeout is collected by the caller (a miss, or "not yet").
            with contextlib.suppress(Exception):
                pending.future.result(timeout=wait)
        self._wait_left -= time.monotonic() - started

    def _collect(self, pending: _Pending, timeout: float | None, *, drain: bool = False) -> None:
        """Read the sent Lookups' answers, up to ``timeout`` seconds in all (None: each as
        long as the client's own timeout), and complete ``pending.future`` once all are in.
        ``drain`` (the scheduler's thread only): while an answer is not in yet, read the
        replies of sent Releases, time this thread would spend waiting anyway, and those
        already in (a select each) before it."""
        sent = pending.sent
        if sent is None or pending.future.done():
            return
        if drain and self._releases:
            self._drain_releases()
        end = None if timeout is None else time.monotonic() + timeout
        try:
            while len(pending.answers) < len(sent):
                call = sent[len(pending.answers)]
                if drain and self._releases and not call.ready():
                    self._drain_releases()
                left = None if end is None else max(0.0, end - time.monotonic())
                pending.answers.append(call.result(left))
        except TimeoutError:
            return  # not yet
        except Exception as exc:
            for rest in sent[len(pending.answers) + 1 :]:
                rest.abandon()
            leases = tuple(a.lease_id for a in pending.answers)
            if any(leases):  # in the pool: this may be the scheduler's thread
                self._pool.submit(self._release, leases)
            pending.future.set_exception(exc)
            return
        pending.future.set_result(_hit(pending.answers))

    def _let_go(self, pending: _Pending) -> None:
        """Nobody waits for ``pending`` any more: its lease, if it comes, is released."""
        if pending.sent is not None and not pending.future.done():
            self._pool.submit(self._collect, pending, None, drain=False)
        pending.future.add_done_callback(self._release_late)

    def _settle_sent(self, sent: list[SentLookup]) -> None:
        """Read Lookups nobody waits for and release what they pinned."""
        leases = []
        for call in sent:
            with contextlib.suppress(Exception):
                leases.append(call.result(None).lease_id)
        self._release(leases)

    @property
    def unread_releases(self) -> int:
        """Releases sent on the socket whose replies are not read yet."""
        return len(self._releases)

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
        found: list[Lookup] = []
        try:
            for rank, keys in enumerate(chains):
                found.append(
                    client.lookup(keys, **self._lookup_args(rank, cube_ids, hint, shared_id))
                )
        except BaseException:
            self._release([f.lease_id for f in found])
            raise
        return _hit(found)

    def forget(self, request_id: str, *, release: bool) -> None:
        """Drop a request's answer; with ``release``, unpin what it had pinned."""
        hit = self._answers.pop(request_id, None)
        pending = self._pending.pop(request_id, None)
        if release and pending is not None:
            self._let_go(pending)
        if release and hit is not None:
            self.release(hit.leases)

    def release(self, leases: Sequence[str]) -> None:
        """Unpin ``leases`` without waiting for the daemon (the blocks they held are loaded):
        sent on the socket from this thread, the replies read on a later call; else in the
        pool."""
        if not any(leases):
            return
        if len(self._releases) >= MAX_UNREAD_RELEASES:
            self._drain_releases()
        try:
            client = self._client()
            for lease in leases:
                if lease:
                    self._releases.append(client.send_release(lease))
        except Exception:  # no socket (or it failed): over gRPC, in the pool; twice is harmless
            self._pool.submit(self._release, leases)

    def _drain_releases(self) -> None:
        """Read the replies of sent Releases that are in (which gives their connections back);
        past a few still out (a daemon that is slow to answer), the pool waits for the
        oldest."""
        waiting: list[Sent[Any]] = []
        for call in self._releases:
            if call.ready():
                with contextlib.suppress(Exception):  # an unreleased lease expires by itself
                    call.result(0.0)
            else:
                waiting.append(call)
        while len(waiting) > MAX_UNREAD_RELEASES:
            self._pool.submit(_read_quietly, waiting.pop(0))
        self._releases = waiting

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
        for call in self._releases:
            call.abandon()
        self._releases = []
        self._pool.shutdown(wait=False, cancel_futures=True)


#: Sent Releases whose replies are not read yet, at most (each holds one of the client's
#: connections, ``client_local.MAX_CONNECTIONS``: the rest stay free for Lookups).
MAX_UNREAD_RELEASES = 4


def _read_quietly(call: Sent[Any]) -> None:
    with contextlib.suppress(Exception):
        call.result(None)


def _hit(found: Sequence[Lookup]) -> Hit:
    """One rank's answer per rank: the blocks every rank pinned, each rank's lease and files."""
    leases = tuple(f.lease_id for f in found)
    files = tuple(tuple((c.path, c.size) for c in f.files) for f in found)
    blocks = min((f.pinned for f in found), default=0)
    return Hit(blocks, leases, files if any(files) else ())


def _brief(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
