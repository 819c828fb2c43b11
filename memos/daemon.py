"""memosd: the daemon's entry point."""

from __future__ import annotations

import argparse
import faulthandler
import gc
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from memos import __version__
from memos.config import load_settings
from memos.logs import setup_logging

# Past the drain and the jobs' wait, how long closing may take before the process gives up
# with every thread's stack in its log: a shutdown stuck in a thread or a native call then
# leaves a trace, where the orchestrator's SIGKILL would leave none.
SHUTDOWN_SLACK_S = 15.0

log = logging.getLogger("memosd")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="memosd",
        description="The memos daemon. With no flags it runs the embedded default: LanceDB in "
        "./memos-data, listening on 127.0.0.1:50051 in development mode (no tokens).",
    )
    p.add_argument("--config", type=Path, help="TOML config file (also MEMOS_CONFIG)")
    p.add_argument("--data-dir", type=Path, help="where the stores live (MEMOS_DATA_DIR)")
    p.add_argument("--listen", help="HOST:PORT for gRPC (MEMOS_LISTEN), default 127.0.0.1:50051")
    p.add_argument("--metrics-listen", help="HOST:PORT for Prometheus /metrics")
    p.add_argument("--log-format", choices=["json", "text"])
    p.add_argument("--log-level")
    p.add_argument("--version", action="version", version=f"memosd {__version__}")
    return p.parse_args(argv)


def settle_heap() -> None:
    """Move what the daemon loaded to start (the model, torch, LanceDB, the stores: about half
    a million objects) out of the cyclic collector's reach: they live as long as the daemon,
    and every full collection walked them all with every thread stopped (0.3-0.8 s measured)
    in the middle of whatever requests were running. Objects made later are collected as before."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info(
        "heap settled",
        extra={
            "frozen_objects": gc.get_freeze_count(),
            "ms": round((time.perf_counter() - started) * 1000),
        },
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(
            args.config,
            data_dir=args.data_dir,
            listen=args.listen,
            metrics_listen=args.metrics_listen,
            log_format=args.log_format,
            log_level=args.log_level,
        )
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        print(f"memosd: bad configuration: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_format, settings.log_level)

    from memos.api.server import DevModeRefused, Server

    try:
        server = Server(settings)
    except DevModeRefused as exc:
        log.error(str(exc))
        return 2
    if settings.metrics_listen:
        from prometheus_client import start_http_server

        host, _, port = settings.metrics_listen.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]"))
        log.info("metrics", extra={"listen": settings.metrics_listen})

    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal", extra={"signal": signal.Signals(signum).name})
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # `kill -USR1 PID` prints every thread's stack to stderr, and the daemon goes on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        server.start(before_serving=settle_heap)
    except OSError as exc:
        log.error(str(exc))
        server.stop(0)
        return 1
    print(
        f"memosd {__version__} serving on {settings.listen} (data in {settings.data_dir})",
        file=sys.stderr,
        flush=True,
    )
    while not stop_requested.wait(1.0):
        pass
    faulthandler.dump_traceback_later(
        settings.drain_notice_s
        + settings.drain_grace_s
        + settings.jobs.stop_timeout_s
        + SHUTDOWN_SLACK_S,
        exit=True,
    )
    server.stop(notice_s=settings.drain_notice_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
