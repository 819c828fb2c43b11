"""Stopping the job runner: it waits for a running job, but only so long."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from memos.jobs import Jobs


def _start_blocking(jobs: Jobs, release: threading.Event) -> threading.Event:
    started = threading.Event()

    def blocking() -> None:
        started.set()
        release.wait(30)

    jobs.add("blocking", 3600, blocking)
    jobs.start()
    threading.Thread(target=jobs.run, args=("blocking",), daemon=True).start()
    assert started.wait(10)
    return started


def test_stop_gives_up_on_a_job_that_outlasts_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    jobs = Jobs()
    release = threading.Event()
    _start_blocking(jobs, release)
    try:
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="memos.jobs"):
            assert jobs.stop(timeout_s=0.3) is False
        assert time.monotonic() - t0 < 5
        assert any("still running at shutdown" in r.getMessage() for r in caplog.records)
    finally:
        release.set()


def test_stop_waits_for_a_job_that_ends_in_time() -> None:
    jobs = Jobs()
    release = threading.Event()
    _start_blocking(jobs, release)
    threading.Timer(0.3, release.set).start()
    t0 = time.monotonic()
    assert jobs.stop(timeout_s=10) is True
    assert 0.2 < time.monotonic() - t0 < 9
    assert jobs.get("blocking").runs[-1].ok
