"""Short-lease cluster settings and readers of the cluster's Redis keys, for the tests."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import cast

import redis

from memos.config import ClusterSettings

TTL_S = 1.0


def fast_settings(**overrides: object) -> ClusterSettings:
    values: dict[str, object] = {
        "lease_ttl_s": TTL_S,
        "renew_interval_s": 0.2,
        "read_block_ms": 100,
        "retry_s": 0.1,
        "connect_timeout_s": 0.5,
        **overrides,
    }
    return ClusterSettings.model_validate(values)


@dataclass(frozen=True)
class RunRecord:
    job: str
    run: str
    replica: str
    fence: int
    start_us: int
    end_us: int | None  # None: the run never committed its end


def read_runs(client: redis.Redis, key: str = "memos:cluster:runs") -> list[RunRecord]:
    starts: dict[str, dict[bytes, bytes]] = {}
    ends: dict[str, int] = {}
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(key))
    for _id, fields in entries:
        run = fields[b"run"].decode()
        if fields[b"phase"] == b"start":
            starts[run] = fields
        elif fields[b"ok"] == b"1":
            ends[run] = int(fields[b"at_us"])
    return sorted(
        (
            RunRecord(
                job=f[b"job"].decode(),
                run=run,
                replica=f[b"replica"].decode(),
                fence=int(f[b"fence"]),
                start_us=int(f[b"at_us"]),
                end_us=ends.get(run),
            )
            for run, f in starts.items()
        ),
        key=lambda r: r.start_us,
    )


def assert_no_overlap(runs: list[RunRecord]) -> None:
    """Committed runs of one job never overlap, and later runs never carry older fences."""
    by_job: dict[str, list[RunRecord]] = {}
    for r in runs:
        by_job.setdefault(r.job, []).append(r)
    for job, seq in by_job.items():
        for before, after in pairwise(seq):
            assert after.fence >= before.fence, (job, before, after)
            if before.end_us is not None:
                assert after.start_us >= before.end_us, f"{job} ran twice at once: {before} {after}"
            else:
                # A run that never committed its end ended a term: the next run is a new term.
                assert after.fence > before.fence, (job, before, after)
