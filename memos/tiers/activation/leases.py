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

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from memos.tiers.activation.expiring import Expiring
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
        self._leases: Expiring[Lease] = Expiring(self._unpin, capacity=max_leases, clock=clock)

    def grant(
        self, tenant: str, namespace: bytes, keys: Sequence[bytes], seconds: float
    ) -> Lease | None:
        """Pin the leading ``keys``; a lease over those pinned, or None when none could be."""
        if self._leases.full():
            return None
        pinned = self._store.pin(keys, namespace=namespace)
        if not pinned:
            return None
        lease = Lease(
            id=secrets.token_hex(16),
            tenant=tenant,
            namespace=namespace,
            keys=tuple(keys[:pinned]),
            expires_at=self._leases.clock() + seconds,
        )
        if not self._leases.add(lease.id, lease):
            self._unpin(lease)  # the last slot went to another grant meanwhile
            return None
        return lease

    def release(self, tenant: str, lease_id: str) -> bool:
        """Unpin a lease's chunks; False when it is unknown, expired or another tenant's."""
        return self._leases.release(tenant, lease_id)

    def sweep(self) -> int:
        """Release every expired lease; how many there were."""
        return self._leases.sweep()

    def counts(self) -> tuple[int, int]:
        """(live leases, chunk pins they hold)."""
        live = self._leases.live()
        return len(live), sum(len(lease.keys) for lease in live)

    def close(self) -> None:
        self._leases.close()

    def _unpin(self, lease: Lease) -> None:
        self._store.unpin(lease.keys, namespace=lease.namespace)
