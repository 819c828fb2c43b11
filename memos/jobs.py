"""Periodic jobs on APScheduler, each with an interval, a run history and a manual trigger."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from apscheduler.schedulers.background import BackgroundScheduler

from memos.metrics import JOB_RUNS, JOB_SECONDS

log = logging.getLogger(__name__)

HISTORY = 50


class NotLeader(Exception):
    """This replica does not hold the cluster lease, so a cluster-wide job does not run here."""


class LeaderGuard(Protocol):
    """Runs a cluster-wide job only on the leader (``memos.cluster.leader.LeaderLease``)."""

    def run_if_leader(self, job: str, fn: Callable[[], object]) -> object:
        """``fn()``'s result, or NotLeader when this replica must not run it."""
        ...


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
    # Cluster-wide: with a leader guard (cluster mode) it runs on the leader replica only.
    cluster: bool = False
    runs: deque[JobRun] = field(default_factory=lambda: deque(maxlen=HISTORY))
    lock: threading.Lock = field(default_factory=threading.Lock)


class Jobs:
    """The daemon's job runner. A job never runs twice at once (its lock is held)."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        # Set in cluster mode; without it (one daemon) cluster-wide jobs run here.
        self.leader: LeaderGuard | None = None
        self._scheduler = BackgroundScheduler(timezone=UTC, job_defaults={"coalesce": True})

    def add(
        self,
        name: str,
        interval_s: float,
        fn: Callable[[], object],
        description: str = "",
        *,
        cluster: bool = False,
    ) -> None:
        job = Job(name, interval_s, fn, description, cluster=cluster)
        self._jobs[name] = job
        self._scheduler.add_job(
            self.run, "interval", seconds=interval_s, args=[name], id=name, max_instances=1
        )

    def start(self) -> None:
        self._scheduler.start()

    def stop(self, timeout_s: float | None = None) -> bool:
        """Schedule nothing more and wait up to ``timeout_s`` (None: for ever) for the jobs
        running now; False when one is still running then (it is logged, and left to finish
        or die with the process)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        done = True
        for job in self._jobs.values():
            wait = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            if job.lock.acquire(timeout=wait):
                job.lock.release()
                continue
            done = False
            log.warning(
                "job still running at shutdown: closing without waiting for it",
                extra={"job": job.name, "waited_s": timeout_s},
            )
        return done

    def next_run_at(self, name: str) -> datetime | None:
        job = self._scheduler.get_job(name)
        when = getattr(job, "next_run_time", None) if job is not None else None
        return when if isinstance(when, datetime) else None

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
            guard = self.leader if job.cluster else None
            try:
                result = job.fn() if guard is None else guard.run_if_leader(name, job.fn)
                ok, detail = True, "" if result is None else str(result)
            except NotLeader as exc:
                run = JobRun(
                    name, started, time.perf_counter() - t0, True, f"skipped: not leader ({exc})"
                )
                job.runs.append(run)
                JOB_RUNS.labels(name, "skipped").inc()
                log.debug("job skipped: not leader", extra={"job": name})
                return run
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
