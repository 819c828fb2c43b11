"""Store-level tenancy and pins: namespaces never mix, pinned chunks survive eviction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from memos.config import ActivationSettings
from memos.errors import PermissionDenied
from memos.tiers.activation.leases import PinLeases
from memos.tiers.activation.levels import DiskLevel, RamLevel
from memos.tiers.activation.store import ActivationStore
from memos.tiers.activation.tenancy import tenant_cache_salt, tenant_namespace
from memos.tiers.activation.tier import ActivationTier
from tests.activation._chunks import make_chunks

CHUNKS = make_chunks(6)
KEYS = [k for k, _ in CHUNKS]
CHUNK_BYTES = len(CHUNKS[0][1])
ACME, GLOBEX = tenant_namespace("acme"), tenant_namespace("globex")


def ram_and_disk(
    tmp_path: Path, ram_chunks: int, *, write: tuple[str, ...] = ()
) -> ActivationStore:
    return ActivationStore(
        [RamLevel(ram_chunks * CHUNK_BYTES), DiskLevel(tmp_path / "disk", 1 << 20)],
        write_levels=write or None,
    )


def test_a_namespace_sees_only_its_own_chunks(tmp_path: Path) -> None:
    store = ram_and_disk(tmp_path, 8)
    store.put_many(CHUNKS[:3], namespace=ACME)
    assert store.lookup(KEYS, namespace=ACME) == 3
    assert store.lookup(KEYS, namespace=GLOBEX) == 0
    assert store.lookup(KEYS) == 0
    assert store.fetch(KEYS, namespace=GLOBEX) == []
    assert store.pin(KEYS, namespace=GLOBEX) == 0
    assert [bytes(c.raw) for c in store.fetch(KEYS, namespace=ACME)] == [b for _, b in CHUNKS[:3]]
    assert store.drop(KEYS, namespace=GLOBEX) == 0
    assert store.lookup(KEYS, namespace=ACME) == 3


def test_namespaced_disk_chunks_survive_a_restart(tmp_path: Path) -> None:
    ram_and_disk(tmp_path, 8).put_many(CHUNKS[:2], namespace=ACME)
    again = ram_and_disk(tmp_path, 8)
    assert again.lookup(KEYS, namespace=ACME) == 2
    assert [bytes(c.raw) for c in again.fetch(KEYS, namespace=ACME)] == [b for _, b in CHUNKS[:2]]


def test_pin_loads_from_disk_and_holds_against_eviction(tmp_path: Path) -> None:
    store = ram_and_disk(tmp_path, 3, write=("disk",))
    store.put_many(CHUNKS[:3], namespace=ACME)
    ram = store.pin_level
    assert ram is not None and ram.stats().items == 0, "written to disk only"
    assert store.pin(KEYS[:3], namespace=ACME) == 3, "read from disk, verified, pinned in RAM"
    assert ram.contains_many([ACME + k for k in KEYS[:3]]) == [True] * 3
    # RAM is full of pinned chunks: newcomers are refused there, never evict the pinned ones.
    for key, blob in CHUNKS[3:]:
        assert not ram.put(ACME + key, blob)
    assert ram.contains_many([ACME + k for k in KEYS[:3]]) == [True] * 3
    store.unpin(KEYS[:3], namespace=ACME)
    assert ram.put(ACME + KEYS[3], CHUNKS[3][1]), "unpinned chunks are evictable again"


def test_pin_stops_where_ram_runs_out(tmp_path: Path) -> None:
    store = ram_and_disk(tmp_path, 2, write=("disk",))
    store.put_many(CHUNKS[:4], namespace=ACME)
    assert store.pin(KEYS[:4], namespace=ACME) == 2


def test_leases_release_once_by_their_tenant_or_by_expiry(tmp_path: Path) -> None:
    now = [0.0]
    store = ram_and_disk(tmp_path, 4)
    store.put_many(CHUNKS[:2], namespace=ACME)
    leases = PinLeases(store, clock=lambda: now[0])
    lease = leases.grant("acme", ACME, KEYS[:2], 10.0)
    assert lease is not None and lease.keys == tuple(KEYS[:2])
    assert leases.counts() == (1, 2)
    assert not leases.release("globex", lease.id), "another tenant cannot release it"
    assert leases.release("acme", lease.id)
    assert not leases.release("acme", lease.id)
    assert leases.counts() == (0, 0)
    ram = store.pin_level
    assert ram is not None and not any(ram.is_pinned(ACME + k) for k in KEYS[:2])

    expiring = leases.grant("acme", ACME, KEYS[:2], 10.0)
    assert expiring is not None and ram.is_pinned(ACME + KEYS[0])
    now[0] = 10.5
    assert leases.counts() == (0, 0)
    assert not ram.is_pinned(ACME + KEYS[0])


def test_salts_differ_by_tenant_and_hide_behind_a_secret() -> None:
    assert tenant_cache_salt("acme") != tenant_cache_salt("globex")
    secret = tenant_cache_salt("acme", b"k1")
    assert secret != tenant_cache_salt("acme") and "acme" not in secret
    assert secret != tenant_cache_salt("acme", b"k2")
    assert tenant_namespace("acme") != tenant_namespace("globex")


@dataclass(frozen=True)
class Caller:
    tenant: str
    scopes: frozenset[str] = frozenset({"read", "write"})

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise PermissionDenied(f"no {scope}")


def test_a_fetch_stream_releases_its_lease_however_it_ends(tmp_path: Path) -> None:
    tier = ActivationTier(ram_and_disk(tmp_path, 8), ActivationSettings())
    acme = Caller("acme")
    tier.put(acme, CHUNKS[:4])
    for consume in (0, 1, 10):
        lease = tier.lookup(acme, KEYS, pin=True)
        assert lease.pinned == 4 and tier.leases.counts() == (1, 4)
        stream = tier.fetch(acme, KEYS, lease_id=lease.lease_id)
        got = [chunk for _, chunk in zip(range(consume), stream, strict=False)]
        assert len(got) == min(consume, 4)
        if consume < 10:
            stream.close()  # closed early, even before its first chunk
        assert tier.leases.counts() == (0, 0), consume
    with pytest.raises(PermissionDenied):
        tier.put(Caller("acme", frozenset({"read"})), CHUNKS[:1])
