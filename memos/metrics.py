"""Prometheus metrics of the daemon, and the interceptor that times every RPC."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

RPC_LATENCY = Histogram(
    "memos_rpc_seconds",
    "gRPC call latency",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RPC_ERRORS = Counter("memos_rpc_errors_total", "gRPC calls that failed", ["method", "code"])
JOB_RUNS = Counter("memos_job_runs_total", "background job runs", ["job", "outcome"])
JOB_SECONDS = Histogram("memos_job_seconds", "background job duration", ["job"])
CACHE_REQUESTS = Counter(
    "memos_cache_requests_total",
    "page requests the tier manager saw, by cache, level and outcome (hit or miss)",
    ["cache", "level", "outcome"],
)
CACHE_EVICTIONS = Counter(
    "memos_cache_evictions_total", "items the tier manager evicted, by reason", ["cache", "reason"]
)
PREDICTOR_LABELS = Counter(
    "memos_predictor_labels_total",
    "matured labels of the one-bit predictor, by how the emitted bit fared",
    ["cache", "outcome"],
)
PREDICTOR_ERROR_RATE = Gauge(
    "memos_predictor_error_rate",
    "share of matured labels the emitted bit got wrong, by error type",
    ["cache", "type"],
)
MIGRATIONS = Counter(
    "memos_migrations_total", "cubes moved between tiers by the jobs", ["direction", "outcome"]
)
PREFILL_TOKENS = Counter("memos_prefill_tokens_total", "tokens prefilled by promotions")
FUSED = Counter("memos_fused_cubes_total", "near-duplicate cubes archived into a fused successor")
CORETRIEVAL_FUSED = Counter(
    "memos_coretrieval_fused_total",
    "activation cubes built from a set of plaintext cubes retrieved together",
)
EXPIRED = Counter("memos_swept_cubes_total", "cubes removed by the lifecycle job (TTL, retention)")
CLUSTER_ACCESSES = Counter(
    "memos_cluster_accesses_total",
    "accesses on the cluster's shared access log, by kind (page, chunk) and outcome "
    "(published; dropped: never reached Redis; applied: another replica's page request fed "
    "to this manager; replayed: a chunk access fed to the Redis level's policy by the leader)",
    ["kind", "outcome"],
)


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


class _ScrapeCollector:
    """Counters a component keeps for itself, read at scrape time from the one source the
    server sets (the latest, when several servers share a process, as in tests)."""

    def __init__(self) -> None:
        self.source: Callable[[], Any] | None = None

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[CounterMetricFamily]:
        source = self.source
        if source is None:
            return
        try:
            counts = source()
        except Exception:  # a closed tier or engine: nothing to report
            return
        yield from self.families(counts)

    def families(self, counts: Any) -> Iterator[CounterMetricFamily]:
        raise NotImplementedError


class _LevelCollector(_ScrapeCollector):
    """The activation levels' own counters (hits, misses, evictions)."""

    def families(self, counts: Any) -> Iterator[CounterMetricFamily]:
        levels: Sequence[Any] = counts
        requests = CounterMetricFamily(
            "memos_kv_level_requests",
            "KV chunk look-ups per activation level, by outcome",
            labels=["cache", "level", "outcome"],
        )
        evictions = CounterMetricFamily(
            "memos_kv_level_evictions", "chunks evicted per activation level", labels=["level"]
        )
        for lv in levels:
            requests.add_metric(["activation", lv.name, "hit"], lv.hits)
            requests.add_metric(["activation", lv.name, "miss"], lv.misses)
            evictions.add_metric([lv.name], lv.evictions)
        yield requests
        yield evictions


KV_LEVELS = _LevelCollector()
REGISTRY.register(KV_LEVELS)


class _SlotCollector(_ScrapeCollector):
    """The engine's LoRA slots' counters (AdapterService.Request)."""

    def families(self, counts: Any) -> Iterator[CounterMetricFamily]:
        stats = counts
        requests = CounterMetricFamily(
            "memos_lora_slot_requests",
            "adapter page requests to the engine's LoRA slots, by outcome",
            labels=["cache", "outcome"],
        )
        requests.add_metric(["lora-slots", "hit"], stats.hits)
        requests.add_metric(["lora-slots", "miss"], stats.requests - stats.hits)
        yield requests
        unloads = CounterMetricFamily(
            "memos_lora_slot_unloads", "adapters the slots' policy evicted", labels=["cache"]
        )
        unloads.add_metric(["lora-slots"], stats.unloads)
        yield unloads


LORA_SLOTS = _SlotCollector()
REGISTRY.register(LORA_SLOTS)
