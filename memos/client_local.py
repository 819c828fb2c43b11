"""Client side of the same-host Lookup socket (``memos.local_wire``).

:class:`LocalChannel` sends Lookup and Release frames on the daemon's Unix socket, one
connection per calling thread (a connection carries one call at a time). A failure to
connect raises :class:`NoLocalSocket`, which its caller answers by making the call over
gRPC instead; a failure once the request is sent raises ``Unavailable``; the daemon's own
refusals raise the typed error a gRPC call would.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from memos import local_wire as wire
from memos.client import error_class
from memos.errors import MemosError, Unavailable

M = TypeVar("M", bound=Message)

#: Replies are a Lookup's file names at most: far below this.
MAX_REPLY_BYTES = 64 << 20


class NoLocalSocket(Unavailable):
    """Nothing listens on the socket (no daemon, or one without it): use gRPC."""


def error_for(code: str, message: str) -> MemosError:
    """The memos error a gRPC status named ``code`` maps to."""
    try:
        status = grpc.StatusCode[code]
    except KeyError:
        return MemosError(message)
    return error_class(status)(message)


class LocalChannel:
    def __init__(
        self, path: Path | str, metadata: tuple[tuple[str, str], ...], timeout: float | None
    ) -> None:
        self.path = os.fspath(path)
        self._hello = wire.encode(wire.HELLO, wire.metadata_payload(metadata))
        self._timeout = timeout
        self._local = threading.local()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.calls = 0  # answered over the socket

    def call(self, kind: int, request: Message, reply_type: type[M]) -> M:
        frame = wire.encode(kind, request.SerializeToString())
        reused = getattr(self._local, "sock", None) is not None
        sock = self._socket()
        try:
            sock.sendall(frame)
            answer, payload = wire.receive(sock, MAX_REPLY_BYTES)
        except (BrokenPipeError, ConnectionResetError, EOFError) as exc:
            self._drop(sock)
            if not reused:
                raise Unavailable(f"the daemon's lookup socket {self.path} closed ({exc})") from exc
            # A connection kept from before a daemon restart: the daemon that had it is gone,
            # and with it anything this call did there. Once more, on a new connection.
            return self.call(kind, request, reply_type)
        except (OSError, ValueError) as exc:
            self._drop(sock)
            raise Unavailable(
                f"the daemon's lookup socket {self.path} failed mid-call ({exc})"
            ) from exc
        if answer == wire.ERROR:
            code, message = wire.parse_error(payload)
            if code == "RESOURCE_EXHAUSTED":  # the daemon closes the connection after these
                self._drop(sock)
            raise error_for(code, message)
        with self._lock:
            self.calls += 1
        return reply_type.FromString(payload)

    def _socket(self) -> socket.socket:
        sock: socket.socket | None = getattr(self._local, "sock", None)
        if sock is not None:
            return sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self._timeout)
        try:
            sock.connect(self.path)
            sock.sendall(self._hello)
        except OSError as exc:
            sock.close()
            raise NoLocalSocket(f"nothing answers on {self.path} ({exc})") from exc
        self._local.sock = sock
        with self._lock:
            self._sockets.append(sock)
        return sock

    def _drop(self, sock: socket.socket) -> None:
        self._local.sock = None
        with self._lock, contextlib.suppress(ValueError):
            self._sockets.remove(sock)
        sock.close()

    def close(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()
