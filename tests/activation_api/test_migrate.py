"""Migrate over gRPC with the tiny model: the KV a daemon stores restores exact logits, the
plaintext is never touched, migration is idempotent, demotion and eviction keep the text."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from memos.client import MemosClient
from memos.client_activation import ActivationClient
from memos.cube import Kind, State
from memos.engines.hf import HFEngine
from memos.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from memos.migration import META_PARENT
from memos.tiers.activation.chunk import decode
from tests.activation_api.conftest import StartKv
from tests.fixtures.daemon import ServerHandle

Connect = Callable[[ServerHandle, str], tuple[MemosClient, ActivationClient]]

TEXT = "The deploy key rotates every Monday at nine; the old key stays valid for an hour. " * 2
OTHER = "Incident reviews happen on Thursdays, and every action item gets an owner and a date."


def chunk_keys(cube_keys: tuple[str, ...]) -> list[bytes]:
    return [bytes.fromhex(k) for k in cube_keys]


def test_migrate_stores_kv_that_restores_the_logits_of_a_full_recompute(
    kv_server: ServerHandle, connect: Connect, tiny_engine: HFEngine
) -> None:
    memos, kv = connect(kv_server, "acme")
    plain = memos.put(TEXT, tags=["ops"])
    done = kv.migrate(plain.id, to="activation")
    cube = done.cube
    assert done.created and done.prefilled_chunks == len(cube.activation.chunk_keys)  # type: ignore[union-attr]
    assert cube.kind == Kind.ACTIVATION and cube.parent_ids == (plain.id,)
    assert cube.tenant == "acme" and cube.namespace == plain.namespace and cube.tags == ("ops",)
    payload = cube.activation
    assert payload is not None
    tokens = tiny_engine.tokenize(TEXT)
    assert payload.token_count == len(tokens) and payload.chunk_tokens == 16
    assert payload.model_fingerprint == tiny_engine.layout.fingerprint.hex()
    assert payload.cache_salt == kv.stats().cache_salt == "memos-tenant:acme"
    expected = tiny_engine.keys(tokens, cache_salt=payload.cache_salt)
    assert chunk_keys(payload.chunk_keys) == expected and len(expected) == len(tokens) // 16
    assert cube.metadata[META_PARENT] == plain.id
    assert memos.get(cube.id) == cube

    keys = chunk_keys(payload.chunk_keys)
    lease = kv.lookup(keys, pin=True)
    assert lease.pinned == len(keys)
    chunks = [decode(blob, key) for key, blob in kv.iter_fetch(keys, lease_id=lease.lease_id)]
    assert len(chunks) == len(keys)
    restored = tiny_engine.rebuild(chunks)
    step = tiny_engine.feed(tokens, restored)
    full = tiny_engine.prefill(tokens)
    assert torch.allclose(step.logits, full.logits, atol=1e-5, rtol=0)
    # And the continuation is the same text.
    assert tiny_engine.generate(tokens, 8, tiny_engine.rebuild(chunks)) == tiny_engine.generate(
        tokens, 8
    )
    # The plaintext is untouched.
    assert memos.get(plain.id) == plain


def test_migrating_twice_returns_the_same_cube_without_prefilling(
    kv_server: ServerHandle, connect: Connect
) -> None:
    memos, kv = connect(kv_server, "acme")
    plain = memos.put(TEXT)
    first = kv.migrate(plain.id, to="activation")
    again = kv.migrate(plain.id, to="activation")
    assert not again.created and again.prefilled_chunks == 0
    assert again.reused_chunks == first.prefilled_chunks
    assert again.cube == first.cube
    # Naming the activation cube itself migrates its parent: the same cube again.
    assert kv.migrate(first.cube.id, to="activation").cube.id == first.cube.id
    listed = list(memos.list(kind="activation"))
    assert [c.id for c in listed] == [first.cube.id]


def test_evicted_chunks_are_prefilled_again_and_the_plaintext_survives(
    start_kv: StartKv, connect: Connect
) -> None:
    # RAM only, room for 12 chunks (8320 bytes each): the second cube evicts the first's.
    handle = start_kv(activation={"ram_budget_bytes": 12 * 8400, "disk_budget_bytes": 0})
    memos, kv = connect(handle, "acme")
    first = memos.put(TEXT)
    second = memos.put(OTHER * 2)
    a = kv.migrate(first.id, to="activation")
    keys = chunk_keys(a.cube.activation.chunk_keys)  # type: ignore[union-attr]
    assert kv.lookup(keys).matched == len(keys)
    kv.migrate(second.id, to="activation")
    assert kv.lookup(keys).matched < len(keys), "the first cube's chunks were evicted"
    assert next(lv for lv in kv.stats().levels if lv.kind == "ram").evictions > 0
    assert memos.get(first.id) == first and memos.history(first.id) == [first]
    again = kv.migrate(first.id, to="activation")
    assert again.cube.id == a.cube.id and not again.created and again.prefilled_chunks > 0
    assert kv.lookup(keys).matched == len(keys)


def test_demotion_drops_the_chunks_archives_the_cube_and_keeps_the_plaintext(
    kv_server: ServerHandle, connect: Connect
) -> None:
    memos, kv = connect(kv_server, "acme")
    plain = memos.put(TEXT)
    sibling = memos.put(TEXT + " And one more line.")
    a = kv.migrate(plain.id, to="activation")
    b = kv.migrate(sibling.id, to="activation")
    keys = chunk_keys(a.cube.activation.chunk_keys)  # type: ignore[union-attr]
    shared = len(keys)  # the sibling's text starts with the same tokens: same chunks
    assert chunk_keys(b.cube.activation.chunk_keys)[:shared] == keys  # type: ignore[union-attr]

    down = kv.migrate(a.cube.id, to="plaintext")
    assert down.cube == plain, "demotion answers with the plaintext, unchanged"
    assert [c.id for c in down.archived] == [a.cube.id]
    assert down.archived[0].state == State.ARCHIVED
    assert memos.get(a.cube.id).state == State.ARCHIVED
    assert kv.lookup(keys).matched == shared, "chunks the sibling still lists stay"

    down_b = kv.migrate(sibling.id, to="plaintext")  # by the plaintext's id
    assert [c.id for c in down_b.archived] == [b.cube.id] and down_b.dropped_chunks > 0
    assert kv.lookup(keys).matched == 0
    assert memos.get(plain.id) == plain and memos.get(sibling.id) == sibling
    assert kv.migrate(sibling.id, to="plaintext").archived == (), "idempotent"
    # Promoting again makes a new activation cube.
    assert kv.migrate(plain.id, to="activation").created


def test_a_changed_text_updates_the_activation_cube(
    kv_server: ServerHandle, connect: Connect
) -> None:
    memos, kv = connect(kv_server, "acme")
    plain = memos.put(TEXT)
    first = kv.migrate(plain.id, to="activation").cube
    memos.update(plain.id, text=OTHER * 2)
    second = kv.migrate(plain.id, to="activation")
    assert second.cube.id == first.id and second.cube.version == 2
    assert second.cube.activation != first.activation
    assert kv.lookup(chunk_keys(first.activation.chunk_keys)).matched == 0  # type: ignore[union-attr]


def test_tenants_get_their_own_salt_keys_and_cubes(
    kv_server: ServerHandle, connect: Connect
) -> None:
    acme_memos, acme = connect(kv_server, "acme")
    globex_memos, globex = connect(kv_server, "globex")
    a = acme.migrate(acme_memos.put(TEXT).id, to="activation").cube
    g = globex.migrate(globex_memos.put(TEXT).id, to="activation").cube
    assert a.activation is not None and g.activation is not None
    assert a.activation.cache_salt != g.activation.cache_salt
    assert set(a.activation.chunk_keys).isdisjoint(g.activation.chunk_keys)
    assert globex.lookup(chunk_keys(a.activation.chunk_keys)).matched == 0
    with pytest.raises(NotFound):
        globex.migrate(a.id, to="plaintext")
    with pytest.raises(NotFound):
        globex.migrate(a.parent_ids[0], to="activation")


def test_migrate_refusals(start_kv: StartKv, connect: Connect) -> None:
    bare = start_kv(model=False)
    memos, kv = connect(bare, "acme")
    plain = memos.put(TEXT)
    with pytest.raises(FailedPrecondition, match=r"engine\.model_path"):
        kv.migrate(plain.id, to="activation")
    assert kv.migrate(plain.id, to="plaintext").cube == plain, "nothing to demote: fine"

    handle = start_kv()
    memos, kv = connect(handle, "acme")
    short = memos.put("too short")
    with pytest.raises(FailedPrecondition, match="shorter than one chunk"):
        kv.migrate(short.id, to="activation")
    with pytest.raises(NotFound):
        kv.migrate("01JDZ8Q3V2X7G4M5N6P7R8S9T0", to="activation")
    with pytest.raises(InvalidArgument, match="not available"):
        kv.migrate(short.id, to="activation", engine="tgi")
    with pytest.raises(InvalidArgument):
        kv.migrate(short.id, to="parameter")
    _, reader = connect(handle, "reader")
    with pytest.raises(PermissionDenied, match="write"):
        reader.migrate(memos.put(TEXT).id, to="activation")


def test_a_cube_larger_than_the_levels_is_refused(start_kv: StartKv, connect: Connect) -> None:
    handle = start_kv(activation={"ram_budget_bytes": 3 * 8400, "disk_budget_bytes": 0})
    memos, kv = connect(handle, "acme")
    plain = memos.put(TEXT)
    with pytest.raises(ResourceExhausted, match=r"hold 0 of .* 10 chunks"):
        kv.migrate(plain.id, to="activation")
    assert list(memos.list(kind="activation")) == [] and memos.get(plain.id) == plain


def test_deleting_the_plaintext_drops_its_kv(kv_server: ServerHandle, connect: Connect) -> None:
    memos, kv = connect(kv_server, "acme")
    plain = memos.put(TEXT)
    cube = kv.migrate(plain.id, to="activation").cube
    keys = chunk_keys(cube.activation.chunk_keys)  # type: ignore[union-attr]
    assert kv.lookup(keys).matched == len(keys)
    memos.delete(plain.id)
    assert kv.lookup(keys).matched == 0
    archived = list(memos.list(kind="activation", states=["archived"]))
    assert [c.id for c in archived] == [cube.id]
    with pytest.raises(NotFound):
        kv.migrate(plain.id, to="activation")
    # Demoting again finds nothing left to drop.
    assert kv.migrate(plain.id, to="plaintext").archived == ()


def test_activation_and_adapter_cubes_are_not_deleted_through_memcube_delete(
    kv_server: ServerHandle, connect: Connect
) -> None:
    memos, kv = connect(kv_server, "acme")
    plain = memos.put(TEXT)
    cube = kv.migrate(plain.id, to="activation").cube
    with pytest.raises(FailedPrecondition, match="--to plaintext"):
        memos.delete(cube.id)
    assert memos.get(cube.id).state == "active"
