"""The parameter tier on vLLM: the daemon drives a vLLM OpenAI server's adapter slots over
HTTP, and memos's LoRA resolver inside that server fetches unknown adapters from it.

One real ``vllm.entrypoints.openai.api_server`` process for the module (runtime LoRA
updating on, two slots, max rank 8), one real daemon whose slot policy is LRU with k = 2
and whose ``parameter.engine`` is that server, checked against it every half second.
Adapters are random rank-8 PEFT adapters. The last test restarts the server.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from memos.client import MemosClient
from memos.client_adapters import AdapterClient
from memos.errors import FailedPrecondition
from tests.fixtures.daemon import TOKENS
from tests.vllm.engines import (
    Daemon,
    OpenAIServer,
    build_model,
    prompt,
    start_daemon,
    write_lora,
)

# The module's one server start counts against its first test: on a busy 2-core machine
# it takes minutes.
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1500)]

SLOTS = 2
PROMPT = prompt(seed=5, length=40)


@dataclass
class Setup:
    url: str
    daemon: Daemon
    adapters: AdapterClient
    work: Path
    cache: Path
    #: Stop the vLLM server and start a new one on the same port (it serves no adapter).
    restart: Callable[[], None]

    def slots(self) -> Any:
        adapters = self.daemon.server.kernel().parameter
        assert adapters is not None
        return adapters.slots


def wait_until(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _post(url: str, body: dict[str, Any], timeout: float = 120) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        with exc:
            raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"raw": raw.decode(errors="replace")}


def complete(url: str, model: str) -> tuple[int, str]:
    """Greedy completion of PROMPT by ``model`` (the base model, or an adapter's name)."""
    status, doc = _post(
        url + "/v1/completions",
        {"model": model, "prompt": PROMPT, "max_tokens": 8, "temperature": 0.0},
    )
    if status != 200:
        return status, json.dumps(doc)
    return status, doc["choices"][0]["text"]


def served(url: str) -> set[str]:
    with urllib.request.urlopen(url + "/v1/models", timeout=30) as r:
        return {m["id"] for m in json.loads(r.read())["data"] if m.get("parent")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("vllm-lora")
    model_dir = build_model(work / "model")
    cache = work / "resolver-cache"
    lora = [
        "--seed", "0",
        "--enable-lora", "--max-loras", str(SLOTS), "--max-cpu-loras", str(SLOTS),
        "--max-lora-rank", "8",
    ]  # fmt: skip
    server = OpenAIServer(work, model_dir, lora, {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"})
    daemon = start_daemon(
        work / "memosd",
        engine={"model_path": model_dir},
        parameter={
            "engine": "vllm",
            "vllm_url": server.url,
            "slots": SLOTS,
            "policy": "lru",
            "vllm_resync_s": 0.5,
        },
    )
    # The resolver inside vLLM fetches unknown adapters from this daemon.
    server.env.update(
        {
            "MEMOS_VLLM_RESOLVER_DAEMON": daemon.addr,
            "MEMOS_VLLM_RESOLVER_TOKEN": TOKENS["acme"],
            "MEMOS_VLLM_RESOLVER_CACHE_DIR": str(cache),
        }
    )
    client = MemosClient(daemon.addr, token=TOKENS["acme"])
    try:
        server.start()
        yield Setup(server.url, daemon, AdapterClient(client), work, cache, server.restart)
    finally:
        client.close()
        server.close()
        daemon.stop()


def register(s: Setup, name: str, seed: int, rank: int = 8) -> str:
    directory = write_lora(s.work / "src" / name, seed=seed, rank=rank)
    return s.adapters.register(directory, name=name).adapter.id


def test_the_daemon_loads_and_unloads_adapters_over_http(setup: Setup) -> None:
    s = setup
    status, base = complete(s.url, "tiny")
    assert status == 200
    a_id = register(s, "tone-a", seed=1)

    page = s.adapters.request("tone-a")
    assert page.applied and page.load and not page.hit and page.key == a_id
    assert a_id in served(s.url)
    status, tuned = complete(s.url, a_id)
    assert status == 200 and tuned != base
    # A second request is a hit: nothing changes in the engine, the output is the same.
    again = s.adapters.request("tone-a")
    assert again.hit and not again.load and again.applied
    assert complete(s.url, a_id) == (200, tuned)

    # Deleting the adapter frees its slot: the next page request unloads it in vLLM.
    s.adapters.delete("tone-a")
    register(s, "tone-b", seed=2)
    page_b = s.adapters.request("tone-b")
    assert a_id in page_b.unload
    assert a_id not in served(s.url)
    status, body = complete(s.url, a_id)
    assert status == 404, body
    s.adapters.delete("tone-b")


def test_an_adapter_the_daemon_evicts_is_no_longer_served(setup: Setup) -> None:
    s = setup
    ids = [register(s, f"evict-{i}", seed=10 + i) for i in range(SLOTS + 1)]
    outputs = {}
    for i in range(SLOTS):
        assert s.adapters.request(f"evict-{i}").applied
        status, outputs[i] = complete(s.url, ids[i])
        assert status == 200
    # The k+1-th adapter: LRU evicts the least recent, evict-0, and vLLM stops serving it.
    page = s.adapters.request(f"evict-{SLOTS}")
    assert page.load and ids[0] in page.unload
    now = served(s.url)
    assert ids[0] not in now and set(ids[1:]) <= now
    status, body = complete(s.url, ids[0])
    assert status == 404, body
    # The resolver does not bring a daemon key back: ids are the daemon's to load.
    assert ids[0] not in served(s.url)
    assert complete(s.url, ids[1]) == (200, outputs[1])
    # Asked for again, it is loaded again (evicting the next one) and answers as before.
    page = s.adapters.request("evict-0")
    assert page.load and ids[1] in page.unload
    assert complete(s.url, ids[0]) == (200, outputs[0])
    for i in range(SLOTS + 1):
        s.adapters.delete(f"evict-{i}")


def test_the_resolver_loads_an_unknown_adapter_on_first_use(setup: Setup) -> None:
    s = setup
    r_id = register(s, "resolved", seed=3)
    status, base = complete(s.url, "tiny")
    assert status == 200
    assert "resolved" not in served(s.url)

    # vLLM does not know "resolved": memos's resolver fetches it from the daemon.
    status, by_name = complete(s.url, "resolved")
    assert status == 200, by_name
    assert by_name != base
    assert "resolved" in served(s.url)
    digest = s.adapters.get("resolved").digest
    cached = s.cache / "sha256" / digest
    assert sorted(p.name for p in cached.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    # The same adapter loaded explicitly by the daemon answers the same.
    assert s.adapters.request("resolved").applied
    assert complete(s.url, r_id) == (200, by_name)
    # name@vN names a version; an unknown name is still unknown.
    assert complete(s.url, "resolved@v1") == (200, by_name)
    status, body = complete(s.url, "no-such-adapter")
    assert status == 404, body
    s.adapters.delete("resolved")


def test_an_adapter_vllm_cannot_serve_is_failed_precondition(setup: Setup) -> None:
    """Rank 16 passes the daemon's checks (max 64) but not the server's --max-lora-rank 8."""
    s = setup
    big_id = register(s, "too-big", seed=4, rank=16)
    with pytest.raises(FailedPrecondition, match=f"vLLM at {s.url} refused to load .*rank 16"):
        s.adapters.request("too-big")
    assert big_id not in served(s.url)
    # The failed load was taken back: the next request tries again (and fails again).
    with pytest.raises(FailedPrecondition):
        s.adapters.request("too-big")
    s.adapters.delete("too-big")


def test_an_adapter_the_resolver_loaded_takes_a_slot_and_is_evicted(setup: Setup) -> None:
    s = setup
    register(s, "resolved-b", seed=6)
    others = [register(s, f"other-{i}", seed=7 + i) for i in range(SLOTS)]
    status, by_name = complete(s.url, "resolved-b")
    assert status == 200, by_name
    # The resolver downloaded it from the daemon: the daemon takes it in at a resync.
    wait_until(lambda: "resolved-b" in s.slots())
    assert "resolved-b" in served(s.url)
    # It holds one of the k slots like any adapter: the daemon's LRU evicts it in turn,
    # and vLLM stops serving it.
    unloaded: list[str] = []
    for i in range(SLOTS):
        unloaded += s.adapters.request(f"other-{i}").unload
    assert "resolved-b" in unloaded
    assert served(s.url) == set(others)
    # Asked for again, the resolver loads it again, with the same output.
    assert complete(s.url, "resolved-b") == (200, by_name)
    wait_until(lambda: "resolved-b" in s.slots())
    # Deleted: the daemon's next decision unloads it under its name too.
    s.adapters.delete("resolved-b")
    s.adapters.request("other-0")
    assert "resolved-b" not in served(s.url)
    for i in range(SLOTS):
        s.adapters.delete(f"other-{i}")


def test_a_restarted_server_is_caught_up(setup: Setup) -> None:
    s = setup
    key = register(s, "survivor", seed=9)
    assert s.adapters.request("survivor").load
    status, tuned = complete(s.url, key)
    assert status == 200
    s.restart()
    assert served(s.url) == set()
    status, body = complete(s.url, key)
    assert status == 404, body
    # The daemon's background check finds the server without the adapter and drops it,
    # so the next page request loads it again instead of answering a hit.
    wait_until(lambda: key not in s.slots())
    page = s.adapters.request("survivor")
    assert page.load and not page.hit
    assert complete(s.url, key) == (200, tuned)
    s.adapters.delete("survivor")
