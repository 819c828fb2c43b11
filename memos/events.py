"""Cube-change events and the in-process hub that fans them out to Watch streams.

Each subscriber has a bounded queue: a consumer that falls behind is cut off with a clear
reason instead of making the daemon buffer without limit. Cluster mode listens to the local
events (to append them to a Redis Stream) and feeds the hub the events of other replicas, so a
Watch sees changes made through any replica.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from memos.cube import MemCube

log = logging.getLogger(__name__)


class ChangeType(StrEnum):
    PUT = "put"
    UPDATE = "update"
    DELETE = "delete"
    ARCHIVE = "archive"
    EXPIRE = "expire"


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    type: ChangeType
    cube: MemCube
    at: datetime

    @property
    def tenant(self) -> str:
        return self.cube.tenant


class SubscriptionLost(Exception):
    """The subscriber fell behind (its queue overflowed) or the hub closed."""


_CLOSED = object()


@dataclass(eq=False)
class Subscription:
    tenant: str
    namespaces: frozenset[str]
    maxsize: int
    _queue: queue.Queue[object] = field(init=False)
    lost_reason: str | None = None

    def __post_init__(self) -> None:
        self._queue = queue.Queue(maxsize=self.maxsize)

    def wants(self, event: ChangeEvent) -> bool:
        if event.tenant != self.tenant:
            return False
        return not self.namespaces or event.cube.namespace in self.namespaces

    def offer(self, event: ChangeEvent) -> bool:
        try:
            self._queue.put_nowait(event)
            return True
        except queue.Full:
            return False

    def close(self, reason: str | None = None) -> None:
        if reason and self.lost_reason is None:
            self.lost_reason = reason
        # Make room for the sentinel: the consumer must wake up even when the queue is full.
        while True:
            try:
                self._queue.put_nowait(_CLOSED)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def events(self, poll_s: float = 0.5) -> Iterator[ChangeEvent | None]:
        """Yields events; yields None every ``poll_s`` idle seconds so callers can check
        whether their client went away. Ends when closed; raises SubscriptionLost if the
        subscription was cut off."""
        while True:
            try:
                item = self._queue.get(timeout=poll_s)
            except queue.Empty:
                yield None
                continue
            if item is _CLOSED:
                if self.lost_reason:
                    raise SubscriptionLost(self.lost_reason)
                return
            assert isinstance(item, ChangeEvent)
            yield item


class EventHub:
    def __init__(self, queue_size: int = 10_000) -> None:
        self._queue_size = queue_size
        self._subs: set[Subscription] = set()
        self._listeners: list[Callable[[ChangeEvent], None]] = []
        self._lock = threading.Lock()
        self._closed = False

    def add_listener(self, listener: Callable[[ChangeEvent], None]) -> None:
        """Call ``listener`` with every event published locally (not with remote ones). It runs
        on the writer's thread, so it must not block."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[ChangeEvent], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def subscribe(self, tenant: str, namespaces: frozenset[str] = frozenset()) -> Subscription:
        sub = Subscription(tenant, namespaces, self._queue_size)
        with self._lock:
            if self._closed:
                sub.close()
            else:
                self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)
        sub.close()

    def publish(self, event: ChangeEvent, *, remote: bool = False) -> None:
        """Deliver ``event`` to matching subscribers; ``remote`` marks one that another replica
        made (listeners already had it there, so they do not get it again)."""
        with self._lock:
            subs = [s for s in self._subs if s.wants(event)]
            listeners = [] if remote else list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                # A listener's failure must never fail the write that published the event.
                log.exception("event listener failed")
        for sub in subs:
            if not sub.offer(event):
                with self._lock:
                    self._subs.discard(sub)
                sub.close(
                    f"watch fell more than {self._queue_size} events behind; "
                    "resume with List and a new Watch"
                )

    def cut_off(self, reason: str) -> None:
        """End every current subscription as lost (the hub stays open for new ones): for
        when events were missed, so that no watcher goes on believing it saw them all."""
        with self._lock:
            subs, self._subs = list(self._subs), set()
        for sub in subs:
            sub.close(reason)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            subs, self._subs = list(self._subs), set()
        for sub in subs:
            sub.close()
