"""The vLLM connector's scheduler-side Lookups against a real daemon (no vLLM needed): a late
answer is waited for inline, within an allowance per scheduler step, instead of answering
"not yet" at once (vLLM then asks again in a busy loop of empty steps); over the same-host
socket, the scheduler's thread sends the Lookup and reads its answer, and Releases go out
without waiting, none of them lost."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import torch

from memos.client import MemosClient
from memos.client_activation import ActivationClient, Lookup
from memos.integrations.vllm.lookups import Hit, Lookups
from memos.local_wire import SOCKET_NAME
from memos.tiers.activation.chunk import encode
from memos.tiers.activation.shared import read_shared_id
from tests.activation_api.conftest import StartKv
from tests.activation_api.test_connector_load import HEAD, HEADS, LAYERS, TOKENS
from tests.activation_api.test_connector_load import _codec as codec_for
from tests.activation_api.test_migrate import Connect

ALLOWANCE_S = 0.3


def test_a_late_lookup_is_waited_for_within_each_steps_allowance(
    start_kv: StartKv, connect: Connect
) -> None:
    handle = start_kv(model=False)
    client, kv = connect(handle, "acme")
    codec = codec_for("cpu-vec")
    keys = [codec.layout.fingerprint + bytes([i, 3]) * 16 for i in range(4)]
    blocks = torch.randn(len(keys), LAYERS, 2, HEADS, TOKENS, HEAD, generator=torch.manual_seed(3))
    kv.store([(k, encode(k, codec.model_layout, b)) for k, b in zip(keys, blocks, strict=True)])

    # The daemon's answer is held back until the test lets it through (a gRPC client: the
    # Lookups run in the pool's threads).
    through = threading.Event()

    class LateClient(ActivationClient):
        def lookup(self, *args: Any, **kwargs: Any) -> Lookup:
            through.wait(30)
            return kv.lookup(*args, **kwargs)

    late = LateClient(client)
    lookups = Lookups(lambda: late, inline_s=ALLOWANCE_S, timeout_s=30, lease_ms=30_000)
    try:

        def timed(request_id: str) -> tuple[Hit | None, float]:
            started = time.monotonic()
            hit = lookups.get(request_id, [keys])
            return hit, time.monotonic() - started

        # The first ask waits the step's whole allowance, then says "not yet".
        hit, waited = timed("a")
        assert hit is None and waited >= ALLOWANCE_S * 0.9
        # Spent: in the same step, neither this request nor another one waits.
        hit, waited = timed("a")
        assert hit is None and waited < ALLOWANCE_S / 2
        hit, waited = timed("b")
        assert hit is None and waited < ALLOWANCE_S / 2
        # A new step may wait again: asked again, a pending Lookup is waited for.
        lookups.new_step()
        hit, waited = timed("a")
        assert hit is None and waited >= ALLOWANCE_S * 0.9
        # The answer arrives while the next step waits: it returns with it, early.
        lookups.new_step()
        threading.Timer(ALLOWANCE_S / 4, through.set).start()
        hit, waited = timed("a")
        assert hit is not None and hit.blocks == len(keys)
        assert waited < ALLOWANCE_S
        assert lookups.lookups == 2 and lookups.timeouts == 0
        for lease in hit.leases:
            assert kv.release(lease)
        lookups.forget("b", release=True)
    finally:
        through.set()
        lookups.close()


def _stored_on_a_shared_daemon(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> tuple[ActivationClient, ActivationClient, list[bytes], Path]:
    """A daemon with a shared directory and its socket, 4 blocks stored: (the gRPC client,
    one with the socket, the keys, the directory)."""
    from tests.activation_api.test_shared_dir import shared_server

    root = tmp_path / "shm"
    handle = shared_server(start_kv, root)
    _, kv = connect(handle, "acme")
    codec = codec_for("cpu-vec")
    keys = [codec.layout.fingerprint + bytes([i, 4]) * 16 for i in range(4)]
    blocks = torch.randn(len(keys), LAYERS, 2, HEADS, TOKENS, HEAD, generator=torch.manual_seed(4))
    kv.store([(k, encode(k, codec.model_layout, b)) for k, b in zip(keys, blocks, strict=True)])
    token = handle.tokens["acme"]
    local = ActivationClient(MemosClient(handle.addr, token=token), local_socket=root / SOCKET_NAME)
    return kv, local, keys, root


def _leases_drop_to_zero(kv: ActivationClient, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while kv.stats().leases and time.monotonic() < deadline:
        time.sleep(0.01)
    return kv.stats().leases == 0


def test_over_the_socket_the_schedulers_thread_sends_and_reads_and_releases(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> None:
    kv, local, keys, root = _stored_on_a_shared_daemon(start_kv, connect, tmp_path)
    lookups = Lookups(lambda: local, inline_s=5.0, timeout_s=30, lease_ms=30_000)
    try:
        shared_id = lambda: read_shared_id(root)  # noqa: E731
        # As a request arrives: sent, not waited for.
        assert lookups.get("a", [keys], shared_dir_id=shared_id, wait=False) is None
        hit = lookups.get("a", [keys], shared_dir_id=shared_id)
        assert hit is not None and hit.blocks == len(keys) and all(hit.leases)
        assert len(hit.files[0]) == len(keys), "the files of the pinned blocks"
        assert lookups.lookups == 1 and local.local_calls == 1, "one Lookup, over the socket"
        assert kv.stats().leases == 1
        # Released on the socket without waiting for the reply ...
        lookups.release(hit.leases)
        assert lookups.unread_releases == 1 and local.local_calls == 1
        assert _leases_drop_to_zero(kv)
        # ... which a later Lookup's wait reads once it is in (never lost).
        drained, deadline = False, time.monotonic() + 10
        while not drained and time.monotonic() < deadline:
            assert lookups.get("b", [keys[:2]], shared_dir_id=shared_id) is not None
            drained = lookups.unread_releases == 0
            lookups.forget("b", release=True)
            assert _leases_drop_to_zero(kv)
        assert drained, "the Releases' replies were read"
        assert local.local_calls >= 3, "the Lookups and the Release, over the socket"
    finally:
        lookups.close()


def test_a_socket_lookup_given_up_on_leaves_no_lease_behind(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> None:
    """A Lookup past its deadline is a miss, whenever its answer comes: the lease it brings
    is released; so is one of a request dropped while its Lookup was out."""
    kv, local, keys, _ = _stored_on_a_shared_daemon(start_kv, connect, tmp_path)
    lookups = Lookups(lambda: local, inline_s=0.0, timeout_s=0.0, lease_ms=30_000)
    try:
        for n in range(5):
            hit = lookups.get(f"late-{n}", [keys])
            if hit is not None:  # the answer may beat a zero deadline: then it is the hit
                lookups.forget(f"late-{n}", release=True)
        assert lookups.timeouts >= 1
        patient = Lookups(lambda: local, inline_s=0.0, timeout_s=30, lease_ms=30_000)
        assert patient.get("dropped", [keys], wait=False) is None
        patient.forget("dropped", release=True)
        assert _leases_drop_to_zero(kv), "every lease was released"
        patient.close()
    finally:
        lookups.close()
