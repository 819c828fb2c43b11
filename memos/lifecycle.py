"""The lifecycle job: cubes past their TTL and tombstones past retention leave for good.

The plaintext store's ``sweep`` removes them with their history (``plaintext.
tombstone_retention_s`` bounds how long a deletion stays visible as a tombstone). Before it,
the KV chunks of expired activation cubes are dropped, so a sweep never strands chunks that
only eviction would reclaim, and the manager forgets the expired cubes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from memos.coretrieval import fused_cubes
from memos.cube import utcnow
from memos.kernel import MemoryOS
from memos.manager import JobPrincipal, TierManager, activation_parents
from memos.metrics import EXPIRED

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Swept:
    removed: int
    demoted: int
    forgotten: int

    def __str__(self) -> str:
        return (
            f"removed {self.removed} expired or retired cubes, dropped the KV of "
            f"{self.demoted}, forgot {self.forgotten}"
        )


def sweep(kernel: MemoryOS, tenants: list[str]) -> Swept:
    now = utcnow()
    demoted = 0
    if kernel.migrator is not None:
        for tenant in tenants:
            for parent_id, cube in activation_parents(kernel, tenant).items():
                if cube.is_expired(now):
                    kernel.migrator.demote(JobPrincipal(tenant), cube.id)
                    demoted += 1
                    log.debug("expired KV dropped", extra={"id": cube.id, "parent": parent_id})
            for cube in fused_cubes(kernel, tenant):  # several parents: listed apart
                if cube.is_expired(now):
                    kernel.migrator.demote(JobPrincipal(tenant), cube.id)
                    demoted += 1
    manager: TierManager | None = kernel.manager
    forgotten = manager.drop_expired(now) if manager is not None else 0
    removed = kernel.plaintext.sweep(now)
    EXPIRED.inc(removed)
    return Swept(removed, demoted, forgotten)
