"""Migration through the engine: a prefill-only request to vLLM's OpenAI server stores the
prompt's blocks in memosd, and the response tells the caller their keys; ``memosctl migrate
--engine vllm`` (SchedulerService.Migrate) does that for a plaintext cube and records the
activation cube, and a request starting with the cube's text then loads its blocks.

A real ``vllm.entrypoints.openai.api_server`` process with the connector (one engine start for
the module: its prefix cache is emptied through the dev API to make it "fresh"), a real daemon.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from memos.cli.app import app
from memos.client import JobsClient, MemosClient
from memos.cube import Kind
from memos.errors import Unavailable
from memos.integrations.vllm import CONNECTOR_MODULE, CONNECTOR_NAME
from memos.integrations.vllm.warmup import WarmupError, served_model, warm
from memos.migration import META_MODEL, META_PARENT
from memos.tiers.activation.keys import chain_hashes
from tests.fixtures.daemon import TOKENS, free_port
from tests.vllm.engines import (
    BLOCK,
    Daemon,
    OpenAIServer,
    activation_client,
    build_model,
    prompt,
    start_daemon,
)

pytestmark = pytest.mark.vllm

MEMORY = prompt(seed=41, length=5 * BLOCK + 9)
# ASCII: the tiny model's byte-level tokenizer makes one token per character.
CUBE_TEXT = "The deploy key rotates every Monday at nine; the old key stays valid an hour. " * 3


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("memosd"))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory, daemon: Daemon) -> Iterator[str]:
    work = tmp_path_factory.mktemp("vllm-server")
    kv = {
        "kv_connector": CONNECTOR_NAME,
        "kv_connector_module_path": CONNECTOR_MODULE,
        "kv_role": "kv_both",
        "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": {"daemon": daemon.addr, "token": TOKENS["acme"]},
    }
    server = OpenAIServer(
        work,
        build_model(work / "model"),
        ["--prefix-caching-hash-algo", "sha256_cbor", "--kv-transfer-config", json.dumps(kv)],
        # The dev API's /reset_prefix_cache lets one server play a fresh engine.
        {"VLLM_SERVER_DEV_MODE": "1"},
    )
    try:
        server.start(timeout_s=600)
        yield server.url
    finally:
        server.close()


def _stored_settles(kv: Any, at_least: int) -> int:
    """The daemon's stored-chunk count once it reaches ``at_least``: a chunk is visible to
    Lookup as soon as the RAM level holds it, and counted once every write level (disk too)
    has taken it, so a matching Lookup alone does not mean the count is final."""
    deadline = time.monotonic() + 30
    while (stored := int(kv.stats().stored_chunks)) < at_least:
        assert time.monotonic() < deadline, f"stored_chunks stayed at {stored} < {at_least}"
        time.sleep(0.05)
    return stored


def test_warmup_through_the_server_stores_the_blocks_and_returns_their_keys(
    vllm_server: str, daemon: Daemon
) -> None:
    kv = activation_client(daemon.addr)
    before = kv.stats().stored_chunks
    warmed = warm(vllm_server, "tiny", MEMORY, cube_ids=["cube-1"])
    assert warmed.prompt_tokens == len(MEMORY)
    assert warmed.block_size == BLOCK
    assert warmed.loaded_tokens == 0
    assert warmed.saved_blocks == len(MEMORY) // BLOCK
    # The keys are vLLM's block hashes, which the daemon computes from the token ids.
    assert list(warmed.block_hashes) == chain_hashes(MEMORY, BLOCK)
    deadline = time.monotonic() + 30
    while kv.lookup(warmed.keys).matched < len(warmed.keys):  # saves are asynchronous
        assert time.monotonic() < deadline, "the blocks never reached the daemon"
        time.sleep(0.1)

    # Warming again (vLLM's own cache holds the prefix now) stores nothing new.
    stored = _stored_settles(kv, before + warmed.saved_blocks)
    again = warm(vllm_server, "tiny", MEMORY)
    assert again.keys == warmed.keys
    assert again.saved_blocks == 0
    assert kv.stats().stored_chunks == stored


def test_warmup_errors_say_what_is_wrong(vllm_server: str) -> None:
    with pytest.raises(WarmupError, match="answered 404"):
        warm(vllm_server, "no-such-model", MEMORY)
    with pytest.raises(WarmupError, match="cannot reach"):
        warm(f"http://127.0.0.1:{free_port()}", "tiny", MEMORY, timeout_s=5)


def _post(url: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.load(response)


def test_migrate_through_vllm_records_the_cube_and_a_fresh_engine_loads_it(
    vllm_server: str, daemon: Daemon
) -> None:
    assert served_model(vllm_server) == "tiny"
    runner = CliRunner(env={"MEMOS_ADDR": None, "MEMOS_TOKEN": None, "MEMOS_TENANT": None})
    kv = activation_client(daemon.addr)
    before = kv.stats().stored_chunks
    with MemosClient(daemon.addr, token=TOKENS["acme"]) as memos:
        plain = memos.put(CUBE_TEXT, tags=["ops"])
        result = runner.invoke(
            app,
            [
                "migrate", plain.id, "--to", "activation", "--engine", "vllm",
                "--engine-url", vllm_server, "--json",
                "--addr", daemon.addr, "--token", TOKENS["acme"],
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["migration"]["created"] is True
        cube = memos.get(doc["id"])
        salt = kv.stats().cache_salt
        payload = cube.activation
        assert payload is not None
        assert cube.kind == Kind.ACTIVATION and cube.parent_ids == (plain.id,)
        assert cube.metadata[META_PARENT] == plain.id and cube.metadata[META_MODEL] == "tiny"
        tokens = len(CUBE_TEXT)  # the tiny tokenizer adds no <s> here
        assert payload.token_count == tokens and payload.chunk_tokens == BLOCK
        assert payload.cache_salt == salt
        assert len(payload.chunk_keys) == tokens // BLOCK
        assert doc["migration"]["prefilled_chunks"] == tokens // BLOCK
        keys = [bytes.fromhex(k) for k in payload.chunk_keys]
        assert {k[:16] for k in keys} == {bytes.fromhex(payload.model_fingerprint)}
        assert kv.lookup(keys).matched == len(keys), "the daemon holds every recorded block"

        # Twice is harmless: the same cube, nothing stored again, over gRPC this time.
        stored = _stored_settles(kv, before + len(keys))
        again = kv.migrate(plain.id, to="activation", engine="vllm", engine_url=vllm_server)
        assert again.cube.id == cube.id and not again.created and again.prefilled_chunks == 0
        assert kv.stats().stored_chunks == stored

        # A fresh engine (vLLM's own prefix cache emptied) asked for the cube's text and a
        # question, with the tenant's salt, loads the cube's blocks from the daemon; the
        # request's cube ids and hint reach the tier manager as a read of the cube.
        assert _post(vllm_server + "/reset_prefix_cache")["success"] is True
        jobs = JobsClient(memos)
        reads = jobs.explain(plain.id).accesses  # the Get of the activation cube was one
        doc = _post(
            vllm_server + "/v1/completions",
            {
                "model": "tiny",
                "prompt": CUBE_TEXT + "When does the key rotate?",
                "max_tokens": 1,
                "temperature": 0.0,
                "cache_salt": salt,
                "kv_transfer_params": {"memos.cube_ids": [plain.id], "memos.hint": True},
            },
        )
        report = doc["kv_transfer_params"]
        assert report["memos.loaded_tokens"] == len(keys) * BLOCK
        seen = jobs.explain(plain.id)
        assert (seen.accesses, seen.latest_bit, seen.bit_source) == (reads + 1, 0, "hint")
        assert seen.recent[-1].op == "kv-lookup"


def test_migrate_to_a_server_that_is_down_is_unavailable_with_its_url(daemon: Daemon) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with MemosClient(daemon.addr, token=TOKENS["acme"]) as memos:
        plain = memos.put(CUBE_TEXT)
        kv = activation_client(daemon.addr)
        with pytest.raises(Unavailable, match=f"cannot reach vLLM at {down}"):
            kv.migrate(plain.id, to="activation", engine="vllm", engine_url=down)
