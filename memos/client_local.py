"""Client side of the same-host Lookup socket (``memos.local_wire``).

:class:`LocalChannel` sends Lookup and Release frames on the daemon's Unix socket, on
connections it keeps (one carries one call at a time), and reads each reply at once or
later (:class:`Sent`). A failure to connect raises :class:`NoLocalSocket`, which its caller
answers by making the call over gRPC instead; a failure once the request is sent raises
``Unavailable``; the daemon's own refusals raise the typed error a gRPC call would.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from pathlib import Path
from typing import Generic, TypeVar

import grpc
from google.protobuf.message import Message

from memos import local_wire as wire
from memos.client import error_class
from memos.errors import MemosError, Unavailable

M = TypeVar("M", bound=Message)

#: Replies are a Lookup's file names at most: far below this.
MAX_REPLY_BYTES = 64 << 20
#: Connections a client keeps open at most (each carries one call; the daemon serves 64).
MAX_CONNECTIONS = 8
CONNECT_TIMEOUT_S = 0.05


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
    """Connections to the daemon's Lookup socket, each carrying one call at a time: a call
    takes an idle connection (or opens one) and gives it back once its reply is read.

    :meth:`call` sends and waits; :meth:`send` only sends, and its :class:`Sent` reads the
    reply later, on any thread: a vLLM scheduler sends its Lookup as a request arrives and
    reads the answer when it plans the request, with no thread between (a helper thread
    would have to wait for the GIL while the scheduler runs Python, and then wake it).
    """

    def __init__(
        self, path: Path | str, metadata: tuple[tuple[str, str], ...], timeout: float | None
    ) -> None:
        self.path = os.fspath(path)
        self._hello = wire.encode(wire.HELLO, wire.metadata_payload(metadata))
        self._timeout = timeout
        self._idle: list[socket.socket] = []  # connected, no call on them
        self._sockets: list[socket.socket] = []  # every open one, to close
        self._lock = threading.Lock()
        self.calls = 0  # answered over the socket

    def call(self, kind: int, request: Message, reply_type: type[M]) -> M:
        sent = self.send(kind, request, reply_type)
        try:
            return sent.result(self._timeout)
        except TimeoutError as exc:
            sent.abandon()
            raise Unavailable(
                f"the daemon's lookup socket {self.path} did not answer in {self._timeout} s"
            ) from exc

    def send(self, kind: int, request: Message, reply_type: type[M]) -> Sent[M]:
        """Send one call; NoLocalSocket when nothing answers on the socket."""
        frame = wire.encode(kind, request.SerializeToString())
        sock, reused = self._send_frame(frame)
        return Sent(self, sock, frame, reply_type, reused=reused)

    def _send_frame(self, frame: bytes) -> tuple[socket.socket, bool]:
        """Write ``frame`` on an idle connection or a new one: (the connection, whether it
        was kept from an earlier call)."""
        sock, reused = self._take()
        try:
            sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError) as exc:
            self._drop(sock)
            if not reused:
                raise Unavailable(f"the daemon's lookup socket {self.path} closed ({exc})") from exc
            # A connection kept from before a daemon restart (the idle ones are too): once
            # more, on a new connection.
            self._drop_idle()
            return self._send_frame(frame)
        except OSError as exc:
            self._drop(sock)
            raise Unavailable(f"the daemon's lookup socket {self.path} failed ({exc})") from exc
        return sock, reused

    def _take(self) -> tuple[socket.socket, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
            if len(self._sockets) >= MAX_CONNECTIONS:
                # Every connection waits for a reply: a daemon this slow gets gRPC calls.
                raise NoLocalSocket(f"all {MAX_CONNECTIONS} connections to {self.path} are busy")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # A Unix socket connects at once, or not at all unless its backlog is full (a daemon
        # that does not accept): never wait long for that, the caller may be a scheduler.
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect(self.path)
            sock.settimeout(self._timeout)
            sock.sendall(self._hello)
        except OSError as exc:
            sock.close()
            raise NoLocalSocket(f"nothing answers on {self.path} ({exc})") from exc
        with self._lock:
            self._sockets.append(sock)
        return sock, False

    def _give_back(self, sock: socket.socket) -> None:
        with self._lock:
            self.calls += 1
            self._idle.append(sock)

    def _drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._sockets = [s for s in self._sockets if s not in idle]
        for sock in idle:
            sock.close()

    def _drop(self, sock: socket.socket) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._sockets.remove(sock)
        sock.close()

    def close(self) -> None:
        with self._lock:
            sockets, self._sockets, self._idle = self._sockets, [], []
        for sock in sockets:
            sock.close()


class Sent(Generic[M]):
    """A call on the socket whose reply is not read yet: :meth:`result` reads it, once."""

    def __init__(
        self,
        channel: LocalChannel,
        sock: socket.socket,
        frame: bytes,
        reply_type: type[M],
        *,
        reused: bool,
    ) -> None:
        self._channel = channel
        self._sock: socket.socket | None = sock
        self._frame = frame
        self._reply_type = reply_type
        self._reused = reused

    def ready(self) -> bool:
        """Whether the reply (or the connection's end) is there to read without waiting."""
        if self._sock is None:
            return True
        try:
            return bool(select.select([self._sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def result(self, timeout: float | None) -> M:
        """The reply, waiting up to ``timeout`` seconds for it to start (None: the channel's
        own timeout); TimeoutError leaves the call pending, to read or abandon later."""
        sock = self._sock
        if sock is None:
            raise RuntimeError("this call's reply was read already, or abandoned")
        if timeout is not None and not select.select([sock], [], [], max(0.0, timeout))[0]:
            raise TimeoutError("no reply yet")
        self._sock = None
        channel = self._channel
        try:
            answer, payload = wire.receive(sock, MAX_REPLY_BYTES)
        except (BrokenPipeError, ConnectionResetError, EOFError) as exc:
            channel._drop(sock)
            if not self._reused:
                raise Unavailable(
                    f"the daemon's lookup socket {channel.path} closed ({exc})"
                ) from exc
            # A connection kept from before a daemon restart: the daemon that had it is gone,
            # and with it anything this call did there. Once more, on a new connection (the
            # idle ones are from before the restart too).
            channel._drop_idle()
            self._sock, self._reused = channel._send_frame(self._frame)
            return self.result(timeout)
        except (OSError, ValueError) as exc:
            channel._drop(sock)
            raise Unavailable(
                f"the daemon's lookup socket {channel.path} failed mid-call ({exc})"
            ) from exc
        if answer == wire.ERROR:
            code, message = wire.parse_error(payload)
            if code == "RESOURCE_EXHAUSTED":  # the daemon closes the connection after these
                channel._drop(sock)
            else:
                channel._give_back(sock)
            raise error_for(code, message)
        channel._give_back(sock)
        return self._reply_type.FromString(payload)

    def abandon(self) -> None:
        """Close the connection, reply unread (whatever the call did stays done)."""
        if self._sock is not None:
            self._channel._drop(self._sock)
            self._sock = None
