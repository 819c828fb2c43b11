"""Periodic jobs on APScheduler, each with an interval, a run history and a manual trigger."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from memos.metrics import JOB_RUNS, JOB_SECONDS

log = logging.getLogger(__name__)

HISTORY = 50


@dataclass(frozen=True, slots=True)
class JobRun:
    job: str
    started_at: datetime
    seconds: float
    ok: bool
    detail: str


@dataclass
class Job:
    name: str
    interval_s: float
    fn: Callable[[], object]
    description: str = ""
    runs: deque[JobRun] = field(default_factory=lambda: deque(maxlen=HISTORY))
    lock: threading.Lock = field(default_factory=threading.Lock)


class Jobs:
    """The daemon's job runner. A job never runs twice at once (its lock is held)."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._scheduler = BackgroundScheduler(timezone=UTC, job_defaults={"coalesce": True})

    def add(
        self, name: str, interval_s: float, fn: Callable[[], object], description: str = ""
    ) -> None:
        job = Job(name, interval_s, fn, description)
        self._jobs[name] = job
        self._scheduler.add_job(
            self.run, "interval", seconds=interval_s, args=[name], id=name, max_instances=1
        )

    def start(self) -> None:
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    def names(self) -> list[str]:
        return sorted(self._jobs)

    def get(self, name: str) -> Job:
        try:
            return self._jobs[name]
        except KeyError:
            raise KeyError(f"no job {name!r}; jobs: {', '.join(self.names())}") from None

    def run(self, name: str) -> JobRun:
        """Run a job now (also what the scheduler calls); waits if it is already running."""
        job = self.get(name)
        with job.lock:
            started = datetime.now(UTC)
            t0 = time.perf_counter()
            try:
                result = job.fn()
                ok, detail = True, "" if result is None else str(result)
            except Exception as exc:
                log.exception("job failed", extra={"job": name})
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            seconds = time.perf_counter() - t0
            run = JobRun(name, started, seconds, ok, detail)
            job.runs.append(run)
        JOB_RUNS.labels(name, "ok" if ok else "error").inc()
        JOB_SECONDS.labels(name).observe(seconds)
        log.info("job ran", extra={"job": name, "ok": ok, "seconds": round(seconds, 3)})
        return run
