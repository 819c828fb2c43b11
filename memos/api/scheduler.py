"""SchedulerService: Migrate, the jobs (ListJobs, RunJob) and Explain, over the kernel."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from memos.api.auth import Authenticator
from memos.api.status import unary
from memos.cube import Kind, kind_from_proto, to_proto
from memos.errors import InvalidArgument, NotFound, Unavailable
from memos.jobs import JobRun, Jobs
from memos.kernel import MemoryOS, Principal
from memos.manager import explain
from memos.v1 import scheduler_pb2 as pb
from memos.v1 import scheduler_pb2_grpc as pb_grpc

_TARGETS = (Kind.ACTIVATION, Kind.PLAINTEXT)


class SchedulerServicer(pb_grpc.SchedulerServiceServicer):
    def __init__(
        self,
        kernel: Callable[[], MemoryOS],
        auth: Authenticator,
        jobs: Callable[[], Jobs] | None = None,
    ) -> None:
        self._kernel = kernel
        self._auth = auth
        self._jobs = jobs

    def _enter(self, context: grpc.ServicerContext) -> tuple[MemoryOS, Principal]:
        principal = self._auth.authenticate(context.invocation_metadata())
        try:
            kernel = self._kernel()
        except LookupError:
            raise Unavailable("the daemon is starting: its stores are not open yet") from None
        return kernel, principal

    @unary
    def Migrate(
        self, request: pb.MigrateRequest, context: grpc.ServicerContext
    ) -> pb.MigrateResponse:
        kernel, who = self._enter(context)
        to = kind_from_proto(request.to)
        if to not in _TARGETS:
            raise InvalidArgument(
                "set `to` to KIND_ACTIVATION (prefill and store the KV cache) or "
                "KIND_PLAINTEXT (drop it again)"
            )
        assert to is not None
        done = kernel.migrate(
            who, request.id, to, engine=request.engine, engine_url=request.engine_url
        )
        return pb.MigrateResponse(
            cube=to_proto(done.cube),
            created=done.created,
            prefilled_chunks=done.prefilled_chunks,
            reused_chunks=done.reused_chunks,
            dropped_chunks=done.dropped_chunks,
            archived=[to_proto(c) for c in done.archived],
        )

    def _job_runner(self) -> Jobs:
        if self._jobs is None:
            raise Unavailable("this server runs no jobs")
        return self._jobs()

    @unary
    def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.ServicerContext
    ) -> pb.ListJobsResponse:
        _, who = self._enter(context)
        who.require("read")
        jobs = self._job_runner()
        keep = request.history or 10
        out = []
        for name in jobs.names():
            job = jobs.get(name)
            info = pb.JobInfo(
                name=name,
                description=job.description,
                interval_s=job.interval_s,
                runs=[_run(r) for r in list(job.runs)[-keep:]],
            )
            when = jobs.next_run_at(name)
            if when is not None:
                info.next_run_at.CopyFrom(_ts(when))
            out.append(info)
        return pb.ListJobsResponse(jobs=out)

    @unary
    def RunJob(self, request: pb.RunJobRequest, context: grpc.ServicerContext) -> pb.RunJobResponse:
        _, who = self._enter(context)
        who.require("admin")
        jobs = self._job_runner()
        if request.name not in jobs.names():
            raise NotFound(f"no job {request.name!r}; jobs: {', '.join(jobs.names())}")
        return pb.RunJobResponse(run=_run(jobs.run(request.name)))

    @unary
    def Explain(
        self, request: pb.ExplainRequest, context: grpc.ServicerContext
    ) -> pb.ExplainResponse:
        kernel, who = self._enter(context)
        e = explain(kernel, who, request.id)
        out = pb.ExplainResponse(
            cube=to_proto(e.cube),
            tier=e.tier,
            activation_ids=list(e.activation_ids),
            cache=e.cache,
            policy=e.policy,
            resident=e.resident,
            decision=e.decision,
            accesses=e.accesses,
            latest_bit=-1 if e.latest_bit is None else e.latest_bit,
            bit_source=e.bit_source,
            size_tokens=e.size_tokens,
            recent=[
                pb.Access(at=_ts(a.at), op=a.op, bit=a.bit, source=a.source, hit=a.hit)
                for a in e.recent
            ],
        )
        if e.last_access is not None:
            out.last_access.CopyFrom(_ts(e.last_access))
        return out

    @unary
    def Stats(
        self, request: pb.TierStatsRequest, context: grpc.ServicerContext
    ) -> pb.TierStatsResponse:
        kernel, who = self._enter(context)
        who.require("read")
        return tier_stats(kernel)


def tier_stats(kernel: MemoryOS) -> pb.TierStatsResponse:
    """The tier manager's caches (and the engine's LoRA slots), daemon-wide counts."""
    out = pb.TierStatsResponse()
    manager = kernel.manager
    if manager is not None:
        s = manager.stats()
        out.caches.append(
            pb.CacheStats(
                name=s.name,
                policy=s.policy,
                unit="tokens",
                budget=s.budget,
                used=s.used,
                residents=s.residents,
                known=s.known,
                requests=s.requests,
                hits=s.hits,
                evictions=s.evictions,
                labelled=s.labelled,
                false_evicts=s.false_evicts,
                false_keeps=s.false_keeps,
                threshold=s.threshold,
                promoted=s.promoted,
                demoted=s.demoted,
                prefilled_tokens=s.prefilled_tokens,
            )
        )
        out.tenants = len(manager.tenants())
        tracker = manager.coretrieval
        if tracker is not None:
            out.coretrieved_sets, out.fused_sets = tracker.counts()
    if kernel.parameter is not None:
        slots = kernel.parameter.slots
        p = slots.predictor
        out.caches.append(
            pb.CacheStats(
                name="lora-slots",
                policy=slots.policy_name,
                unit="slots",
                budget=slots.k,
                used=len(slots),
                residents=len(slots),
                requests=slots.stats.requests,
                hits=slots.stats.hits,
                evictions=slots.stats.unloads,
                labelled=p.labelled if p is not None else 0,
                false_evicts=p.errors[0] if p is not None else 0,
                false_keeps=p.errors[1] if p is not None else 0,
                threshold=p.threshold if p is not None else 0.0,
                loads=slots.stats.loads,
                unloads=slots.stats.unloads,
            )
        )
    return out


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _run(run: JobRun) -> pb.JobRun:
    return pb.JobRun(
        job=run.job,
        started_at=_ts(run.started_at),
        seconds=run.seconds,
        ok=run.ok,
        detail=run.detail,
    )
