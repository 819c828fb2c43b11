"""(e) A daemon that dies or stalls costs a recompute, never a failed or wrong answer.

The daemon is a real ``memosd`` process. It is frozen (SIGSTOP) between the scheduler's
Lookup, which found and pinned the prompt's blocks, and the worker's Fetch; frozen before the
Lookup; killed (SIGKILL) between Lookup and Fetch; then the engine runs with the daemon gone.
Every answer equals the answer computed from scratch, and the failed loads are reported to
vLLM as failed blocks.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.daemon import DaemonProcess
from tests.vllm.engines import BLOCK, build_model, connector_config, engine, prompt

pytestmark = pytest.mark.vllm

PROMPT = prompt(seed=21, length=5 * BLOCK + 3)
OTHER = prompt(seed=22, length=3 * BLOCK + 3)


def test_daemon_frozen_or_killed_mid_request_costs_a_recompute(
    tmp_path: Path, spawn_daemon: Callable[..., DaemonProcess]
) -> None:
    from tests.vllm.killing import KillingConnector  # imports vLLM

    model_dir = build_model(tmp_path / "model")
    daemon = spawn_daemon(tmp_path / "memosd")
    config = connector_config(
        daemon.addr,
        connector="KillingConnector",
        module="tests.vllm.killing",
        tenant="acme",
        lookup_timeout_s=1.0,
        load_timeout_s=1.0,
        store_timeout_s=2.0,
    )
    with engine(model_dir, config) as e:
        reference = e.generate(PROMPT)
        e.wait_for_saves()
        assert reference.report["memos.saved_blocks"] == len(PROMPT) // BLOCK
        loadable = ((len(PROMPT) - 1) // BLOCK) * BLOCK

        # Frozen after the Lookup pinned the blocks: the Fetch runs out of time.
        pid = daemon.proc.pid
        KillingConnector.before_load = lambda: os.kill(pid, signal.SIGSTOP)
        e.forget_local_cache()
        try:
            frozen = e.generate(PROMPT)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert frozen.loaded_tokens == loadable  # planned: the Lookup had answered
        assert e.worker.stats["load_failed_blocks"] == len(PROMPT) // BLOCK
        assert frozen.token_ids == reference.token_ids

        # Frozen before the request: the Lookup gets no answer. The scheduler asks again on
        # later steps (the request waits, nothing blocks), then counts it a miss.
        lookups = e.scheduler._lookups
        timeouts, retries = lookups.timeouts, e.scheduler.stats["lookup_retries"]
        os.kill(pid, signal.SIGSTOP)
        e.forget_local_cache()
        try:
            slow = e.generate(PROMPT)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert lookups.timeouts == timeouts + 1
        assert e.scheduler.stats["lookup_retries"] > retries
        assert slow.loaded_tokens == 0
        assert slow.token_ids == reference.token_ids

        # The daemon is back: the next request loads again.
        e.forget_local_cache()
        back = e.generate(PROMPT)
        assert back.loaded_tokens == loadable
        assert back.token_ids == reference.token_ids
        failed_before = e.worker.stats["load_failed_blocks"]

        # Killed after the Lookup pinned the blocks.
        KillingConnector.before_load = daemon.kill
        e.forget_local_cache()
        killed = e.generate(PROMPT)
        assert daemon.proc.poll() is not None
        assert e.worker.stats["load_failed_blocks"] - failed_before == len(PROMPT) // BLOCK
        assert killed.token_ids == reference.token_ids

        # Gone: the Lookup fails, nothing is loaded, the answers stay right.
        e.forget_local_cache()
        failures = e.scheduler._lookups.failures
        gone = e.generate(PROMPT)
        assert gone.loaded_tokens == 0
        assert e.scheduler._lookups.failures == failures + 1
        assert gone.token_ids == reference.token_ids
        other = e.generate(OTHER)  # its saves fail in the background, silently
        assert len(other.token_ids) == 8
        e.wait_for_saves()
        assert e.worker._saver.failed >= len(OTHER) // BLOCK
