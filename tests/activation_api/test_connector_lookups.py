"""The vLLM connector's scheduler-side Lookups against a real daemon (no vLLM needed): a late
answer is waited for inline, within an allowance per scheduler step, instead of answering
"not yet" at once (vLLM then asks again in a busy loop of empty steps)."""

from __future__ import annotations

import threading
import time

import torch

from memos.client_activation import ActivationClient
from memos.integrations.vllm.lookups import Hit, Lookups
from memos.tiers.activation.chunk import encode
from tests.activation_api.conftest import StartKv
from tests.activation_api.test_connector_load import HEAD, HEADS, LAYERS, TOKENS
from tests.activation_api.test_connector_load import _codec as codec_for
from tests.activation_api.test_migrate import Connect

ALLOWANCE_S = 0.3


def test_a_late_lookup_is_waited_for_within_each_steps_allowance(
    start_kv: StartKv, connect: Connect
) -> None:
    handle = start_kv(model=False)
    _, kv = connect(handle, "acme")
    codec = codec_for("cpu-vec")
    keys = [codec.layout.fingerprint + bytes([i, 3]) * 16 for i in range(4)]
    blocks = torch.randn(len(keys), LAYERS, 2, HEADS, TOKENS, HEAD, generator=torch.manual_seed(3))
    kv.store([(k, encode(k, codec.model_layout, b)) for k, b in zip(keys, blocks, strict=True)])

    # The daemon's answer is held back until the test lets it through.
    through = threading.Event()

    def late_client() -> ActivationClient:
        through.wait(30)
        return kv

    lookups = Lookups(late_client, inline_s=ALLOWANCE_S, timeout_s=30, lease_ms=30_000)
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
