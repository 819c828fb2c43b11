"""Pin leases: chunks an engine was promised stay in RAM until it loads them, or time runs out.

An engine's scheduler asks "how many leading chunks of this chain do you hold?" and plans a
load of that many; its worker fetches them a little later. Without a pin, eviction could take
a chunk in between and the load would fail. A lease pins the matched chunks in the store's
RAM level (:meth:`ActivationStore.pin`) and is released by the fetch that loads them, by an
explicit release, or by its expiry, so a client that never comes back holds RAM for at most
the lease's seconds. Expired leases are swept on every call, so no timer thread is needed.

A lease belongs to the tenant that took it: another tenant can neither release nor use it.
"""

from __future__ import annotations

import heapq
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from memos.tiers.activation.store import ActivationStore


@dataclass(frozen=True, slots=True)
class Lease:
    id: str
    tenant: str
    namespace: bytes
    keys: tuple[bytes, ...]
    expires_at: float  # on the leases' clock (monotonic seconds)


class PinLeases:
    def __init__(
        self,
        store: ActivationStore,
        *,
        max_leases: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._max = max_leases
        self._clock = clock
        self._leases: dict[str, Lease] = {}
        # (expiry, id) of every lease granted; released ones are skipped when they surface.
        self._expiry: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def grant(
        self, tenant: str, namespace: bytes, keys: Sequence[bytes], seconds: float
    ) -> Lease | None:
        """Pin the leading ``keys``; a lease over those pinned, or None when none could be."""
        self.sweep()
        with self._lock:
            if len(self._leases) >= self._max:
                return None
        pinned = self._store.pin(keys, namespace=namespace)
        if not pinned:
            return None
        lease = Lease(
            id=secrets.token_hex(16),
            tenant=tenant,
            namespace=namespace,
            keys=tuple(keys[:pinned]),
            expires_at=self._clock() + seconds,
        )
        with self._lock:
            self._leases[lease.id] = lease
            heapq.heappush(self._expiry, (lease.expires_at, lease.id))
        return lease

    def release(self, tenant: str, lease_id: str) -> bool:
        """Unpin a lease's chunks; False when it is unknown, expired or another tenant's."""
        with self._lock:
            lease = self._leases.get(lease_id)
            if lease is None or lease.tenant != tenant:
                return False
            del self._leases[lease_id]
        self._store.unpin(lease.keys, namespace=lease.namespace)
        self.sweep()
        return True

    def sweep(self) -> int:
        """Release every expired lease; how many there were."""
        now = self._clock()
        expired: list[Lease] = []
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                _, lease_id = heapq.heappop(self._expiry)
                lease = self._leases.pop(lease_id, None)
                if lease is not None:
                    expired.append(lease)
        for lease in expired:
            self._store.unpin(lease.keys, namespace=lease.namespace)
        return len(expired)

    def counts(self) -> tuple[int, int]:
        """(live leases, chunk pins they hold)."""
        self.sweep()
        with self._lock:
            return len(self._leases), sum(len(lease.keys) for lease in self._leases.values())

    def close(self) -> None:
        with self._lock:
            leases = list(self._leases.values())
            self._leases.clear()
            self._expiry.clear()
        for lease in leases:
            self._store.unpin(lease.keys, namespace=lease.namespace)
