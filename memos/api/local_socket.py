"""The same-host Lookup socket: ActivationService's Lookup and Release on a Unix socket.

Frames (``memos.local_wire``) are translated onto the ActivationServicer's own methods, with
a context that carries the connection's HELLO metadata, so a call here is authenticated,
checked and answered exactly as over gRPC: only the transport differs. One thread per
connection (an engine opens one per Lookup thread), at most ``max_connections``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, cast

import grpc
from google.protobuf.message import DecodeError, Message

from memos import local_wire as wire
from memos.v1 import activation_pb2 as pb

log = logging.getLogger(__name__)

_REQUESTS: dict[int, type[Message]] = {
    wire.LOOKUP: pb.KvLookupRequest,
    wire.RELEASE: pb.KvReleaseRequest,
}
#: AF_UNIX paths are limited to 108 bytes on Linux, the terminating NUL included.
MAX_PATH_BYTES = 107


class _Aborted(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _FrameContext:
    """What the servicer's methods use of a ``grpc.ServicerContext``."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise _Aborted(code.name, details)


class LocalSocketServer:
    """Serves Lookup and Release frames on ``path`` with ``servicer``'s methods."""

    def __init__(
        self,
        path: Path,
        servicer: Any,
        *,
        max_frame_bytes: int,
        max_connections: int = 64,
    ) -> None:
        self.path = path
        self._methods: dict[int, Callable[[Message, Any], Message]] = {
            kind: getattr(servicer, name) for kind, name in wire.METHODS.items()
        }
        self._max_frame_bytes = max_frame_bytes
        self._max_connections = max_connections
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.requests = 0

    def start(self) -> bool:
        """Listen; False (and a warning) where the path cannot hold a socket: engines then
        make their Lookups over gRPC."""
        if len(os.fsencode(self.path)) > MAX_PATH_BYTES:
            log.warning(
                "lookup socket not started: its path is over %d bytes (%s); engines use gRPC",
                MAX_PATH_BYTES,
                self.path,
            )
            return False
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # A socket file left by a daemon that did not stop cleanly: nobody listens on it.
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            listener.bind(os.fspath(self.path))
            # Connecting takes write permission on the socket, and the engine's container may
            # run as another user: open to whoever reaches the directory, as a loopback port
            # is to the host; every call still needs a token, as over gRPC.
            os.chmod(self.path, 0o666)
            listener.listen(self._max_connections)
        except OSError as exc:
            listener.close()
            log.warning("lookup socket not started at %s (%s); engines use gRPC", self.path, exc)
            return False
        self._listener = listener
        threading.Thread(target=self._accept, name="memos-lookup-socket", daemon=True).start()
        log.info("lookup socket", extra={"path": str(self.path)})
        return True

    def stop(self) -> None:
        """Stop accepting, close every connection, remove the socket file; idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._listener is not None:
            # shutdown wakes the accept thread; close alone does not on Linux.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            with contextlib.suppress(OSError):
                self.path.unlink()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                full = len(self._connections) >= self._max_connections
                if not full:
                    self._connections.add(conn)
            if full:
                with contextlib.suppress(OSError):
                    wire.send(
                        conn,
                        wire.ERROR,
                        wire.error_payload(
                            "RESOURCE_EXHAUSTED",
                            f"the lookup socket has {self._max_connections} connections "
                            "open: close some, or use gRPC",
                        ),
                    )
                conn.close()
                continue
            threading.Thread(
                target=self._serve, args=(conn,), name="memos-lookup-conn", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            kind, payload = wire.receive(conn, self._max_frame_bytes)
            if kind != wire.HELLO:
                raise ValueError(f"a connection starts with HELLO (kind 0), got kind {kind}")
            context = _FrameContext(wire.parse_metadata(payload))
            while True:
                kind, payload = wire.receive(conn, self._max_frame_bytes)
                wire.send(conn, *self._answer(kind, payload, context))
        except (EOFError, ConnectionError, OSError):
            pass  # the engine went away, or the daemon is stopping
        except ValueError as exc:  # a frame over the limit, a bad HELLO (UnicodeDecodeError too)
            too_large = isinstance(exc, wire.FrameTooLarge)
            code = "RESOURCE_EXHAUSTED" if too_large else "INVALID_ARGUMENT"
            with contextlib.suppress(OSError):
                wire.send(conn, wire.ERROR, wire.error_payload(code, f"{exc}: closing"))
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    def _answer(self, kind: int, payload: bytes, context: _FrameContext) -> tuple[int, bytes]:
        with self._lock:
            self.requests += 1
        request_type = _REQUESTS.get(kind)
        if request_type is None:
            return wire.ERROR, wire.error_payload(
                "INVALID_ARGUMENT", f"unknown request kind {kind}: 1 is Lookup, 2 is Release"
            )
        try:
            request = request_type.FromString(payload)
        except DecodeError:
            return wire.ERROR, wire.error_payload(
                "INVALID_ARGUMENT", f"a {wire.METHODS[kind]} frame that is not its protobuf"
            )
        try:
            reply = self._methods[kind](request, cast(Any, context))
        except _Aborted as aborted:
            return wire.ERROR, wire.error_payload(aborted.code, aborted.message)
        return wire.OK, reply.SerializeToString()
