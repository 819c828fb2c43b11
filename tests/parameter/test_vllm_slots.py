"""The slot drivers: the daemon carries slot decisions out on an engine, vLLM or peft.

vLLM itself runs in tests/vllm/test_lora.py (the vllm suite). Here the driver talks HTTP to
a small real server with vLLM's runtime LoRA endpoints and answers (the status codes and
error bodies of vLLM 0.32's ``OpenAIServingModels``), so the driver's decisions, rollback
and error mapping run in the fast suite. peft's driver runs the real tiny model.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from memos.client import MemosClient
from memos.client_adapters import AdapterClient
from memos.config import ParameterSettings
from memos.engines.lora import LoRAEngine
from memos.engines.peft_slots import PeftLoRASlots
from memos.engines.vllm_lora import VLLMLoRASlots, driver_from_settings
from memos.errors import FailedPrecondition, InvalidArgument, Unavailable
from memos.tiers.parameter.record import AdapterRecord
from memos.tiers.parameter.slots import AdapterSlots, Resync
from memos.tiers.parameter.store import AdapterStore
from tests.fixtures.adapters import random_adapter, write_adapter
from tests.fixtures.daemon import free_port, start_server


class LoRAServer:
    """vLLM's runtime LoRA endpoints over real HTTP, with the same answers."""

    def __init__(self, *, runtime_updates: bool = True, port: int = 0) -> None:
        self.served: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_with: int | None = None  # answer every call with this status
        self.runtime_updates = runtime_updates
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _error(self, status: int, message: str) -> None:
                self._answer(status, {"error": {"message": message, "code": status}})

            def do_GET(self) -> None:
                if self.path != "/v1/models":
                    return self._answer(404, {"detail": "Not Found"})
                cards = [{"id": "tiny", "root": "/models/tiny", "parent": None}]
                cards += [{"id": k, "root": p, "parent": "tiny"} for k, p in server.served.items()]
                self._answer(200, {"object": "list", "data": cards})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not server.runtime_updates or self.path not in (
                    "/v1/load_lora_adapter",
                    "/v1/unload_lora_adapter",
                ):
                    return self._answer(404, {"detail": "Not Found"})
                name = body["lora_name"]
                server.calls.append((self.path.split("/")[-1].split("_")[0], name))
                if server.fail_with is not None:
                    return self._error(server.fail_with, "the engine is busy")
                if self.path == "/v1/unload_lora_adapter":
                    if name not in server.served:
                        return self._error(404, f"The lora adapter '{name}' cannot be found.")
                    del server.served[name]
                    return self._answer(200, f"Success: LoRA adapter '{name}' removed")
                if name in server.served:
                    return self._error(400, f"The lora adapter '{name}' has already been loaded.")
                path = Path(body["lora_path"])
                if not (path / "adapter_config.json").is_file():
                    return self._error(404, f"Loading lora {name} failed: No adapter found")
                config = json.loads((path / "adapter_config.json").read_text())
                if config["r"] > 8:
                    return self._error(500, f"LoRA rank {config['r']} is greater than 8")
                server.served[name] = str(path)
                return self._answer(200, f"Success: LoRA adapter '{name}' added")

        return Handler


@pytest.fixture
def lora_server() -> Iterator[LoRAServer]:
    server = LoRAServer()
    yield server
    server.close()


def records(store: AdapterStore, n: int, **kwargs: Any) -> list[AdapterRecord]:
    return [
        store.register_weights(
            "acme", f"a{i}", random_adapter(store.spec, seed=i, **kwargs), origin="upload"
        )
        for i in range(n)
    ]


def test_the_daemon_keeps_the_server_in_step_with_the_policy(
    lora_server: LoRAServer, adapter_store: AdapterStore
) -> None:
    recs = records(adapter_store, 4)
    driver = VLLMLoRASlots(lora_server.url)
    slots = AdapterSlots(2, "lru", driver=driver)
    for i in [0, 1, 0, 2, 3, 1, 1, 0]:
        decision = slots.serve(recs[i])
        assert set(lora_server.served) == {r.id for r in recs if r.id in slots}
        assert lora_server.served[recs[i].id] == str(Path(recs[i].path).resolve())
        assert decision.hit == (decision.load is None)
    assert driver.served() == lora_server.served
    stats = slots.stats
    loads = sum(1 for op, _ in lora_server.calls if op == "load")
    unloads = sum(1 for op, _ in lora_server.calls if op == "unload")
    assert (stats.loads, stats.unloads) == (loads, unloads) == (6, 4)


def test_load_and_unload_are_idempotent(
    lora_server: LoRAServer, adapter_store: AdapterStore
) -> None:
    (rec,) = records(adapter_store, 1)
    driver = VLLMLoRASlots(lora_server.url)
    driver.load(rec.id, rec)
    driver.load(rec.id, rec)  # 400 "already been loaded": served already
    assert list(lora_server.served) == [rec.id]
    driver.unload(rec.id)
    driver.unload(rec.id)  # 404: not served
    assert lora_server.served == {}


def test_a_load_vllm_refuses_is_taken_back_from_the_policy(
    lora_server: LoRAServer, adapter_store: AdapterStore
) -> None:
    (big,) = records(adapter_store, 1, rank=16)
    slots = AdapterSlots(2, "lru", driver=VLLMLoRASlots(lora_server.url))
    with pytest.raises(FailedPrecondition, match=r"refused to load adapter .*rank 16"):
        slots.serve(big)
    assert big.id not in slots and len(slots) == 0
    elsewhere = VLLMLoRASlots(
        lora_server.url, adapter_path=lambda record: "/nowhere/" + record.digest
    )
    with pytest.raises(FailedPrecondition, match=r"found no adapter at /nowhere/.*adapters_dir"):
        AdapterSlots(2, "lru", driver=elsewhere).serve(big)


def test_an_unload_that_failed_is_retried_before_the_next_decision(
    lora_server: LoRAServer, adapter_store: AdapterStore
) -> None:
    recs = records(adapter_store, 3)
    slots = AdapterSlots(1, "lru", driver=VLLMLoRASlots(lora_server.url))
    slots.serve(recs[0])
    lora_server.fail_with = 503
    with pytest.raises(Unavailable, match="503 the engine is busy"):
        slots.serve(recs[1])  # evicts a0 in the policy, but vLLM does not unload it
    assert recs[1].id not in slots and recs[0].id not in slots
    assert set(lora_server.served) == {recs[0].id}
    lora_server.fail_with = None
    decision = slots.serve(recs[2])
    assert decision.unload == (recs[0].id,)
    assert set(lora_server.served) == {recs[2].id}


def test_a_server_down_or_without_runtime_updates_says_what_to_do(
    adapter_store: AdapterStore,
) -> None:
    (rec,) = records(adapter_store, 1)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unavailable, match=f"vLLM at {url} is unreachable"):
        VLLMLoRASlots(url, timeout_s=5).load(rec.id, rec)
    plain = LoRAServer(runtime_updates=False)
    try:
        with pytest.raises(FailedPrecondition, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
            VLLMLoRASlots(plain.url).load(rec.id, rec)
    finally:
        plain.close()
    with pytest.raises(InvalidArgument, match="not an http"):
        VLLMLoRASlots("127.0.0.1:8000")


def test_paths_map_to_where_vllm_mounts_the_adapters(adapter_store: AdapterStore) -> None:
    (rec,) = records(adapter_store, 1)
    driver = driver_from_settings(
        "http://127.0.0.1:1",
        timeout_s=1,
        api_key=None,
        store_root=adapter_store.root,
        vllm_root=Path("/mnt/adapters"),
    )
    assert driver._adapter_path(rec) == f"/mnt/adapters/sha256/{rec.digest}"


def test_one_interface_drives_peft_too(
    lora_engine: LoRAEngine, adapter_store: AdapterStore
) -> None:
    recs = records(adapter_store, 3)
    prompt = lora_engine.engine.tokenize("slots")
    expected = {}
    for rec in recs:
        lora_engine.load(rec.id, adapter_store.load(rec))
        with lora_engine.use(rec.id) as hf:
            expected[rec.id] = hf.prefill(prompt).logits.clone()
        lora_engine.unload(rec.id)
    slots = AdapterSlots(2, "lru", driver=PeftLoRASlots(lora_engine, adapter_store))
    for i in [0, 1, 2, 0, 2]:
        slots.serve(recs[i])
        assert set(lora_engine.loaded) == {r.id for r in recs if r.id in slots}
        with lora_engine.use(recs[i].id) as hf:
            assert torch.equal(hf.prefill(prompt).logits, expected[recs[i].id])


def test_the_daemon_drives_vllm_for_page_requests(
    tmp_path: Path, tiny_model_dir: Path, lora_server: LoRAServer
) -> None:
    handle = start_server(
        tmp_path / "data",
        tokens=True,
        engine={"model_path": tiny_model_dir},
        parameter={"slots": 1, "policy": "lru", "engine": "vllm", "vllm_url": lora_server.url},
    )
    client = MemosClient(handle.addr, token=handle.tokens["acme"])
    try:
        adapters = AdapterClient(client)
        spec = handle.server.kernel().parameter.tier.store.spec  # type: ignore[union-attr]
        for i in range(2):
            weights = random_adapter(spec, seed=i)
            adapters.register(write_adapter(tmp_path / f"src{i}", weights), name=f"a{i}")
        first = adapters.request("a0")
        assert first.applied and first.load and set(lora_server.served) == {first.key}
        second = adapters.request("a1")
        assert second.unload == (first.key,) and set(lora_server.served) == {second.key}
        lora_server.close()
        with pytest.raises(Unavailable, match=f"vLLM at {lora_server.url} is unreachable"):
            adapters.request("a0")
    finally:
        client.close()
        handle.server.stop(grace_s=1)


def test_a_restarted_server_is_caught_up_after_a_failed_call(
    lora_server: LoRAServer, adapter_store: AdapterStore
) -> None:
    recs = records(adapter_store, 2)
    slots = AdapterSlots(2, "lru", driver=VLLMLoRASlots(lora_server.url, timeout_s=5))
    slots.serve(recs[0])
    port = int(lora_server.url.rsplit(":", 1)[1])
    lora_server.close()  # vLLM goes down...
    with pytest.raises(Unavailable, match="unreachable"):
        slots.serve(recs[1])
    assert recs[0].id in slots  # the daemon still believes it is loaded
    restarted = LoRAServer(port=port)  # ...and comes back serving nothing
    try:
        # Without a resync this would be a hit that the server cannot serve.
        decision = slots.serve(recs[0])
        assert not decision.hit and decision.load == recs[0].id
        assert set(restarted.served) == {recs[0].id}
        assert slots.resyncs == 1
    finally:
        restarted.close()


def test_the_background_resync_notices_a_restart(
    lora_server: LoRAServer, adapter_store: AdapterStore
) -> None:
    recs = records(adapter_store, 2)
    slots = AdapterSlots(2, "lru", driver=VLLMLoRASlots(lora_server.url))
    for rec in recs:
        slots.serve(rec)
    slots.start_resync(0.05)
    try:
        time.sleep(0.3)
        assert all(rec.id in slots for rec in recs)  # nothing changed: nothing dropped
        lora_server.served.clear()  # what a restarted server serves
        deadline = time.monotonic() + 10
        while any(rec.id in slots for rec in recs) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(slots) == 0
        assert slots.serve(recs[1]).load == recs[1].id
        assert set(lora_server.served) == {recs[1].id}
    finally:
        slots.close()


def test_resync_converges_both_ways(lora_server: LoRAServer, adapter_store: AdapterStore) -> None:
    recs = records(adapter_store, 4)
    driver = VLLMLoRASlots(lora_server.url)
    slots = AdapterSlots(2, "lru", driver=driver)
    slots.serve(recs[0])
    # A version id the daemon holds no slot for (a previous run of the daemon loaded it),
    # and a name vLLM's resolver loaded (the daemon sent it the files).
    driver.load(recs[3].id, recs[3])
    lora_server.served["tone"] = "/cache/sha256/" + recs[2].digest
    assert slots.resync() == Resync(adopted=("tone",), unloaded=(recs[3].id,))
    assert "tone" in slots and set(lora_server.served) == {recs[0].id, "tone"}
    assert slots.resync() == Resync()  # converged
    # The resolver's adapter holds a slot like any other: LRU evicts it in its turn.
    assert slots.serve(recs[1]).unload == (recs[0].id,)
    assert slots.serve(recs[2]).unload == ("tone",)
    assert set(lora_server.served) == {recs[1].id, recs[2].id}
    # Lost on the server side: dropped from the policy, loaded again on the next request.
    del lora_server.served[recs[1].id]
    assert slots.resync() == Resync(lost=(recs[1].id,))
    assert slots.serve(recs[2]).hit and not slots.serve(recs[1]).hit


def test_an_adapter_without_a_free_slot_is_unloaded(
    lora_server: LoRAServer, adapter_store: AdapterStore
) -> None:
    (rec,) = records(adapter_store, 1)
    slots = AdapterSlots(1, "lru", driver=VLLMLoRASlots(lora_server.url))
    slots.serve(rec)
    slots.pin(rec.id)
    lora_server.served["tone"] = "/cache/x"
    assert slots.resync() == Resync(unloaded=("tone",))
    assert set(lora_server.served) == {rec.id}


def test_a_vllm_engine_needs_its_url() -> None:
    with pytest.raises(ValidationError, match=r"needs parameter\.vllm_url"):
        ParameterSettings(engine="vllm")
    assert ParameterSettings().engine == "caller"
