"""SchedulerService: moves memories between tiers (Migrate), translated onto the kernel."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from memos.api.auth import Authenticator
from memos.api.status import unary
from memos.cube import Kind, kind_from_proto, to_proto
from memos.errors import InvalidArgument, Unavailable
from memos.kernel import MemoryOS, Principal
from memos.v1 import scheduler_pb2 as pb
from memos.v1 import scheduler_pb2_grpc as pb_grpc

_TARGETS = (Kind.ACTIVATION, Kind.PLAINTEXT)


class SchedulerServicer(pb_grpc.SchedulerServiceServicer):
    def __init__(self, kernel: Callable[[], MemoryOS], auth: Authenticator) -> None:
        self._kernel = kernel
        self._auth = auth

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
        done = kernel.migrate(who, request.id, to, engine=request.engine)
        return pb.MigrateResponse(
            cube=to_proto(done.cube),
            created=done.created,
            prefilled_chunks=done.prefilled_chunks,
            reused_chunks=done.reused_chunks,
            dropped_chunks=done.dropped_chunks,
            archived=[to_proto(c) for c in done.archived],
        )
