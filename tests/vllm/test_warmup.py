"""Migration through the engine: a prefill-only request to vLLM's OpenAI server stores the
prompt's blocks in memosd, and the response tells the caller their keys.

A real ``vllm.entrypoints.openai.api_server`` process with the connector, a real daemon.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from memos.integrations.vllm import CONNECTOR_MODULE, CONNECTOR_NAME
from memos.integrations.vllm.warmup import WarmupError, warm
from memos.tiers.activation.keys import chain_hashes
from tests.fixtures.daemon import TOKENS, free_port
from tests.vllm.engines import BLOCK, Daemon, activation_client, build_model, prompt, start_daemon

pytestmark = pytest.mark.vllm

MEMORY = prompt(seed=41, length=5 * BLOCK + 9)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("memosd"))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory, daemon: Daemon) -> Iterator[str]:
    work = tmp_path_factory.mktemp("vllm-server")
    model_dir = build_model(work / "model")
    port = free_port()
    kv = {
        "kv_connector": CONNECTOR_NAME,
        "kv_connector_module_path": CONNECTOR_MODULE,
        "kv_role": "kv_both",
        "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": {"daemon": daemon.addr, "token": TOKENS["acme"]},
    }
    args = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", "tiny",
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--block-size", str(BLOCK), "--enforce-eager",
        "--max-model-len", "1024", "--prefix-caching-hash-algo", "sha256_cbor",
        "--kv-transfer-config", json.dumps(kv),
    ]  # fmt: skip
    log = (work / "server.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                text = (work / "server.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"the vLLM server did not start:\n{text}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_warmup_through_the_server_stores_the_blocks_and_returns_their_keys(
    vllm_server: str, daemon: Daemon
) -> None:
    warmed = warm(vllm_server, "tiny", MEMORY, cube_ids=["cube-1"])
    assert warmed.prompt_tokens == len(MEMORY)
    assert warmed.block_size == BLOCK
    assert warmed.loaded_tokens == 0
    assert warmed.saved_blocks == len(MEMORY) // BLOCK
    # The keys are vLLM's block hashes, which the daemon computes from the token ids.
    assert list(warmed.block_hashes) == chain_hashes(MEMORY, BLOCK)
    kv = activation_client(daemon.addr)
    deadline = time.monotonic() + 30
    while kv.lookup(warmed.keys).matched < len(warmed.keys):  # saves are asynchronous
        assert time.monotonic() < deadline, "the blocks never reached the daemon"
        time.sleep(0.1)

    # Warming again (vLLM's own cache holds the prefix now) stores nothing new.
    stored = kv.stats().stored_chunks
    again = warm(vllm_server, "tiny", MEMORY)
    assert again.keys == warmed.keys
    assert again.saved_blocks == 0
    assert kv.stats().stored_chunks == stored


def test_warmup_errors_say_what_is_wrong(vllm_server: str) -> None:
    with pytest.raises(WarmupError, match="answered 404"):
        warm(vllm_server, "no-such-model", MEMORY)
    with pytest.raises(WarmupError, match="cannot reach"):
        warm(f"http://127.0.0.1:{free_port()}", "tiny", MEMORY, timeout_s=5)
