"""Same host: a fresh engine loads the stored prefix from the daemon's shared directory (chunk
files, no byte stream) and answers the same; a corrupted file falls back to the stream and
still answers the same.

Engine A saves a prompt through the daemon (which writes it through to its shared directory);
engine B, started after A is gone with an empty prefix cache, mounts the same directory.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from memos.tiers.activation.chunk import HEADER_BYTES
from memos.tiers.activation.tenancy import tenant_namespace
from tests.activation._chunks import flip_byte
from tests.fixtures.daemon import TOKENS
from tests.vllm.engines import (
    BLOCK,
    activation_client,
    build_model,
    connector_config,
    engine,
    prompt,
    start_daemon,
)

pytestmark = pytest.mark.vllm

PROMPT = prompt(seed=41, length=6 * BLOCK + 9)


def test_shared_dir_fresh_engine_loads_files_and_a_corrupt_file_falls_back(
    tmp_path: Path,
) -> None:
    model_dir = build_model(tmp_path / "model")
    shm = tmp_path / "shm"
    daemon = start_daemon(tmp_path / "memosd", activation={"shared_dir": shm})
    try:
        with engine(model_dir, connector_config(daemon.addr, token=TOKENS["acme"])) as a:
            reference = a.generate(PROMPT)
            a.wait_for_saves()
        blocks = len(PROMPT) // BLOCK
        assert reference.report["memos.saved_blocks"] == blocks
        files = [
            shm / "chunks" / name[-64:-62] / f"{name}.kvc"
            for name in ((tenant_namespace("acme") + key).hex() for key in reference.keys)
        ]
        assert all(f.is_file() for f in files), "the daemon wrote the blocks through"

        socket = daemon.server.lookup_socket
        assert socket is not None and socket.requests == 0, "engine A has no shared_dir"
        config = connector_config(daemon.addr, token=TOKENS["acme"], shared_dir=str(shm))
        with engine(model_dir, config) as b:
            fresh = b.generate(PROMPT)
            assert fresh.loaded_tokens == ((len(PROMPT) - 1) // BLOCK) * BLOCK
            # B mounts the directory: its Lookup (and the lease's Release) took the socket.
            assert socket.requests >= 1
            stats = b.worker.stats
            assert stats["shared_dir_blocks"] == stats["loaded_blocks"] == blocks
            assert stats["shared_dir_fallbacks"] == stats["load_failed_blocks"] == 0
            assert stats["fetchless_loads"] == 1, "the Lookup named the files: no Fetch"
            assert fresh.token_ids == reference.token_ids
            # No Fetch named the Lookup's lease: the engine released it after the step.
            kv = activation_client(daemon.addr)
            deadline = time.monotonic() + 30
            while kv.stats().leases and time.monotonic() < deadline:
                time.sleep(0.05)
            assert kv.stats().leases == 0

            # A damaged file (in the payload, where only the checksum sees it): that block
            # comes as bytes instead, and the answer is the same.
            files[2].write_bytes(flip_byte(files[2].read_bytes(), HEADER_BYTES + 1000))
            b.forget_local_cache()
            damaged = b.generate(PROMPT)
            assert damaged.loaded_tokens == fresh.loaded_tokens
            assert stats["shared_dir_fallbacks"] == 1
            assert stats["shared_dir_blocks"] == 2 * blocks - 1
            assert stats["load_failed_blocks"] == 0
            assert damaged.token_ids == reference.token_ids

            # The daemon checked the file it was told about and wrote it anew.
            b.forget_local_cache()
            healed = b.generate(PROMPT)
            assert stats["shared_dir_blocks"] == 3 * blocks - 1
            assert stats["fetchless_loads"] == 2, "the rewritten file came through a Fetch"
            assert healed.token_ids == reference.token_ids

            # The stream is still there per request: the same answer without the files.
            b.forget_local_cache()
            streamed = b.generate(PROMPT, params={"memos.shared_dir": False})
            assert streamed.loaded_tokens == fresh.loaded_tokens
            assert stats["shared_dir_blocks"] == 3 * blocks - 1
            assert streamed.token_ids == reference.token_ids
    finally:
        daemon.stop()
