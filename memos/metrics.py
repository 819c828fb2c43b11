"""Prometheus metrics of the daemon, and the interceptor that times every RPC."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

RPC_LATENCY = Histogram(
    "memos_rpc_seconds",
    "gRPC call latency",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RPC_ERRORS = Counter("memos_rpc_errors_total", "gRPC calls that failed", ["method", "code"])
JOB_RUNS = Counter("memos_job_runs_total", "background job runs", ["job", "outcome"])
JOB_SECONDS = Histogram("memos_job_seconds", "background job duration", ["job"])


class MetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Times unary calls (streams are counted by their own code)."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary

        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            try:
                return inner(request, context)
            finally:
                RPC_LATENCY.labels(method).observe(time.perf_counter() - start)
                code = context.code()
                if code is not None and code != grpc.StatusCode.OK:
                    RPC_ERRORS.labels(method, code.name).inc()

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
