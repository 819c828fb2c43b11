"""The gRPC server: MemCubeService, health, reflection, limits, and a graceful drain.

Start-up order matters for orchestrators: the port opens first with health NOT_SERVING
(probes get an answer), the stores open and the embedding model loads, then SERVING.
On drain: NOT_SERVING first, a short notice while calls still succeed (so load balancers
stop routing), watches end, in-flight calls finish within the grace period, the stores flush.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from memos.api.auth import Authenticator, is_loopback
from memos.api.health import HealthServicer
from memos.api.local_socket import LocalSocketServer
from memos.api.memcube import MemCubeServicer
from memos.config import Settings
from memos.embed import Embedder
from memos.jobs import Jobs
from memos.kernel import MemoryOS
from memos.local_wire import SOCKET_NAME
from memos.metrics import MetricsInterceptor
from memos.v1 import memcube_pb2_grpc

if TYPE_CHECKING:
    from memos.cluster.node import ClusterNode

log = logging.getLogger(__name__)


def _service_names() -> tuple[str, ...]:
    """Every service of every generated proto module, for health and reflection."""
    import importlib
    import pkgutil

    import memos.v1

    names: list[str] = []
    for info in pkgutil.iter_modules(memos.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"memos.v1.{info.name}")
            names.extend(s.full_name for s in module.DESCRIPTOR.services_by_name.values())
    return tuple(sorted(names))


SERVICE_NAMES = _service_names()


class DevModeRefused(RuntimeError):
    pass


class Server:
    def __init__(self, settings: Settings, *, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self._embedder = embedder
        self._kernel: MemoryOS | None = None
        self.auth = Authenticator(settings.auth.all_tokens())
        if self.auth.dev_mode:
            if not is_loopback(settings.listen):
                raise DevModeRefused(
                    f"no auth tokens are configured (development mode), so memosd refuses to "
                    f"listen on {settings.listen}: configure [[auth.tokens]] or "
                    "auth.tokens_file, or listen on 127.0.0.1"
                )
            log.warning(
                "DEVELOPMENT MODE: no auth tokens configured; every caller is an admin of the "
                "tenant it names; listening on loopback only"
            )
        limit = settings.limits.max_message_bytes
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
            interceptors=[MetricsInterceptor()],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=settings.max_workers * 4,
        )
        self.health = HealthServicer(experimental_non_blocking=True)
        self.servicer = MemCubeServicer(
            self.kernel, self.auth, max_watchers=max(1, settings.max_workers // 2)
        )
        memcube_pb2_grpc.add_MemCubeServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self.servicer, self._grpc
        )
        from memos.api.activation import ActivationServicer
        from memos.api.scheduler import SchedulerServicer
        from memos.v1 import activation_pb2_grpc, scheduler_pb2_grpc

        self.activation = ActivationServicer(self.kernel, self.auth, max_message_bytes=limit)
        activation_pb2_grpc.add_ActivationServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self.activation, self._grpc
        )
        self.scheduler = SchedulerServicer(self.kernel, self.auth, lambda: self.jobs)
        scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self.scheduler, self._grpc
        )
        from memos.api.adapters import AdapterServicer
        from memos.v1 import adapter_pb2_grpc

        self.adapters = AdapterServicer(self.kernel, self.auth)
        adapter_pb2_grpc.add_AdapterServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self.adapters, self._grpc
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc
        )
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.jobs = Jobs()
        self.cluster: ClusterNode | None = None
        self.port = 0
        self.lookup_socket: LocalSocketServer | None = None
        self._stopped = threading.Event()

    def kernel(self) -> MemoryOS:
        if self._kernel is None:
            raise LookupError("kernel not open")
        return self._kernel

    def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)

    def start(self, before_serving: Callable[[], None] | None = None) -> int:
        """Open the port (NOT_SERVING), open the stores, call ``before_serving``, then report
        SERVING."""
        self.port = self._grpc.add_insecure_port(self.settings.listen)
        if not self.port:
            raise OSError(f"could not listen on {self.settings.listen}: is the port in use?")
        self._grpc.start()
        log.info("listening", extra={"listen": self.settings.listen, "port": self.port})
        self._kernel = MemoryOS.open(self.settings, embedder=self._embedder)
        if self.settings.redis_url:
            from memos.cluster.node import ClusterNode

            self.cluster = ClusterNode(
                self.settings.redis_url, self.settings.cluster, self._kernel.events
            )
            self.cluster.start()
            self.jobs.leader = self.cluster.leader
        self._start_lookup_socket(self._kernel)
        self._add_jobs(self._kernel)
        if self.cluster is not None:
            self._share_accesses(self.cluster, self._kernel)
        self.jobs.start()
        if before_serving is not None:
            before_serving()
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("serving")
        return self.port

    def _start_lookup_socket(self, kernel: MemoryOS) -> None:
        settings = self.settings.activation
        shared = settings.shared_dir
        if kernel.activation is None or shared is None or not settings.lookup_socket:
            return
        server = LocalSocketServer(
            shared / SOCKET_NAME,
            self.activation,
            max_frame_bytes=self.settings.limits.max_message_bytes,
        )
        if server.start():
            self.lookup_socket = server

    def _add_jobs(self, kernel: MemoryOS) -> None:
        pt = self.settings.plaintext
        # Cluster-wide: in cluster mode the plaintext table is shared, and one writer at a time
        # maintains it (the leader).
        self.jobs.add(
            "index",
            pt.index_interval_s,
            # Held off while writes stream in (PlaintextStore._writes_busy).
            lambda: kernel.plaintext.refresh_index(defer_to_writes=True),
            "build or refresh the ANN index",
            cluster=True,
        )
        self.jobs.add(
            "compact",
            pt.compact_interval_s,
            lambda: kernel.plaintext.compact(defer_to_writes=True),
            "compact LanceDB",
            cluster=True,
        )
        self._add_memory_os_jobs(kernel)

    def _add_memory_os_jobs(self, kernel: MemoryOS) -> None:
        from memos import coretrieval, fusion, lifecycle
        from memos.manager import TierManager, job_tenants, place

        manager = TierManager(
            self.settings.manager, chunk_tokens=self.settings.activation.chunk_tokens
        )
        kernel.manager = manager
        js = self.settings.jobs
        tracker = coretrieval.CoRetrieval(
            js.coretrieval_min_count, js.coretrieval_max_set, js.coretrieval_max_tracked
        )
        manager.coretrieval = tracker
        manager.on_search = tracker.observe
        if kernel.activation is not None:
            from memos.metrics import KV_LEVELS

            tier = kernel.activation
            KV_LEVELS.source = lambda: tier.store.stats().levels
        if kernel.parameter is not None:
            from memos.metrics import LORA_SLOTS

            slots = kernel.parameter.slots
            LORA_SLOTS.source = lambda: slots.stats
        self.jobs.add(
            "expire",
            js.lifecycle_interval_s,
            lambda: lifecycle.sweep(kernel, job_tenants(kernel)),
            "remove cubes past their TTL and tombstones past retention",
            cluster=True,
        )
        self.jobs.add(
            "fuse",
            js.fuse_interval_s,
            lambda: fusion.fuse(kernel, job_tenants(kernel), js),
            "fuse near-duplicate plaintext cubes (originals archived, never deleted)",
            cluster=True,
        )
        if self.settings.engine.model_path is not None:
            self.jobs.add(
                "migrate",
                js.migrate_interval_s,
                lambda: place(kernel, manager, js.prefill_budget_tokens),
                "promote the cubes the policy keeps to KV caches, demote the evicted",
                cluster=True,
            )
        self.jobs.add(
            "fuse-coretrieved",
            js.coretrieval_interval_s,
            lambda: coretrieval.fuse_coretrieved(kernel, tracker, manager.tenants(), js),
            "build one activation cube from cubes retrieved together (canonical order)",
            cluster=True,
        )
        self.jobs.add(
            "retrain",
            js.retrain_interval_s,
            manager.retrain,
            "refit and re-threshold the one-bit predictor on the logged accesses",
        )

    def _share_accesses(self, cluster: ClusterNode, kernel: MemoryOS) -> None:
        """The cluster's access log (every replica's manager learns from all replicas' reads)
        and the Redis level's evictor, run by the leader over all replicas' accesses."""
        from memos.cluster.accesses import redis_level_of

        act = self.settings.activation
        store = kernel.activation.store if kernel.activation is not None else None
        level = redis_level_of(store)
        cluster.share_accesses(kernel.manager, level)
        evictor = cluster.redis_evictor(level, act)
        if evictor is not None:
            self.jobs.add(
                "redis-evict",
                act.redis_evict_interval_s,
                evictor.run,
                f"evict from the shared Redis level by {act.redis_policy} over every "
                "replica's accesses",
                cluster=True,
            )

    def stop(self, grace_s: float | None = None, notice_s: float = 0.0) -> None:
        """Drain and close; idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.drain_grace_s if grace_s is None else grace_s
        log.info("draining", extra={"grace_s": grace, "notice_s": notice_s})
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if notice_s > 0:
            time.sleep(notice_s)
        if self._kernel is not None:
            self._kernel.events.close()  # ends Watch streams so they do not hold the drain
        if self.lookup_socket is not None:
            # Before the drain: an engine's next Lookup goes over gRPC, which answers
            # UNAVAILABLE (a miss) once draining, as a Lookup here would.
            self.lookup_socket.stop()
        self._grpc.stop(grace).wait()
        self.jobs.stop(self.settings.jobs.stop_timeout_s)
        if self.cluster is not None:
            self.cluster.close()  # after the jobs: a running cluster job keeps its lease
        if self._kernel is not None:
            self._kernel.close()
        log.info("stopped")

    def wait(self) -> None:
        self._grpc.wait_for_termination()
