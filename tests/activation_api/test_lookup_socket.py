"""The same-host Lookup socket over a real daemon: Lookup and Release frames on a Unix socket in
the shared directory answer as the gRPC calls do, with the same authentication and tenancy;
bad frames get a status and the daemon keeps serving; without a socket, calls go over gRPC.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from memos import local_wire as wire
from memos.client_activation import ActivationClient
from memos.client_local import LocalChannel, NoLocalSocket
from memos.errors import Unauthenticated
from memos.local_wire import SOCKET_NAME
from memos.tiers.activation.shared import read_shared_id
from memos.v1 import activation_pb2 as pb
from tests.activation._chunks import make_chunks
from tests.activation_api.conftest import StartKv
from tests.activation_api.test_shared_dir import Connect, shared_server
from tests.fixtures.daemon import ServerHandle

CHUNKS = make_chunks(6, seed=5)
KEYS = [k for k, _ in CHUNKS]


def serve(
    start_kv: StartKv, connect: Connect, tmp_path: Path, stored: int, **activation: object
) -> tuple[Path, ServerHandle, ActivationClient]:
    """A daemon with a shared directory, ``stored`` of CHUNKS stored by acme over gRPC."""
    root = tmp_path / "shm"
    handle = shared_server(start_kv, root, **activation)
    _, kv = connect(handle, "acme")
    assert kv.store(CHUNKS[:stored]).stored == stored
    return root, handle, kv


def local(handle: ServerHandle, root: Path, who: str | None) -> ActivationClient:
    from memos.client import MemosClient

    token = handle.tokens[who] if who is not None else None
    return ActivationClient(MemosClient(handle.addr, token=token), local_socket=root / SOCKET_NAME)


def test_lookup_and_release_over_the_socket_answer_as_grpc_does(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> None:
    root, handle, grpc_kv = serve(start_kv, connect, tmp_path, 4)
    assert (root / SOCKET_NAME).is_socket()
    # An engine's container may run as another user: connecting needs write permission.
    assert (root / SOCKET_NAME).stat().st_mode & 0o777 == 0o666
    served = handle.server.lookup_socket
    assert served is not None

    kv = local(handle, root, "acme")
    shared_id = read_shared_id(root)
    found = kv.lookup(KEYS, pin=True, lease_ms=5_000, shared_dir_id=shared_id)
    assert (found.matched, found.pinned) == (4, 4) and found.lease_id
    assert 4_000 <= found.lease_ms <= 5_000
    same = grpc_kv.lookup(KEYS, pin=True, shared_dir_id=shared_id)
    assert [f.path for f in found.files] == [f.path for f in same.files] and len(same.files) == 4
    assert all((root / f.path).stat().st_size == f.size for f in found.files)
    assert kv.local_calls == 1 and served.requests == 1, "the Lookup went over the socket"
    assert grpc_kv.local_calls == 0

    assert grpc_kv.stats().leases == 2
    assert kv.release(found.lease_id) and not kv.release(found.lease_id)
    assert grpc_kv.release(same.lease_id)
    assert grpc_kv.stats().leases == 0 and grpc_kv.stats().pinned_chunks == 0
    assert kv.local_calls == 3
    assert kv.lookup(KEYS[4:]).matched == 0

    # One connection per thread: concurrent Lookups each get their own answer.
    answers: dict[int, int] = {}

    def ask(n: int) -> None:
        answers[n] = kv.lookup(KEYS[: n + 1]).matched

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == {n: min(n + 1, 4) for n in range(6)}
    kv.close()


def test_the_socket_authenticates_every_call_and_keeps_tenants_apart(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> None:
    root, handle, _ = serve(start_kv, connect, tmp_path, 3)
    lease = local(handle, root, "acme").lookup(KEYS, pin=True).lease_id

    with pytest.raises(Unauthenticated, match="missing bearer token"):
        local(handle, root, None).lookup(KEYS)
    from memos.client import MemosClient

    stranger = ActivationClient(
        MemosClient(handle.addr, token="not-a-token"), local_socket=root / SOCKET_NAME
    )
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        stranger.lookup(KEYS)
    globex = local(handle, root, "globex")
    assert globex.lookup(KEYS, pin=True).matched == 0, "another tenant's chunks are not its own"
    assert not globex.release(lease), "nor its leases"
    assert globex.local_calls == 2
    assert local(handle, root, "acme").release(lease)


def _raw(root: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(root / SOCKET_NAME))
    return sock


def test_bad_frames_get_a_status_and_the_daemon_keeps_serving(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> None:
    root, handle, kv = serve(start_kv, connect, tmp_path, 2)
    limit = handle.server.settings.limits.max_message_bytes
    hello = wire.metadata_payload(kv._metadata)

    sock = _raw(root)
    wire.send(sock, wire.HELLO, hello)
    wire.send(sock, 7, b"")
    kind, payload = wire.receive(sock, limit)
    assert kind == wire.ERROR and wire.parse_error(payload)[0] == "INVALID_ARGUMENT"
    assert "unknown request kind 7" in wire.parse_error(payload)[1]
    wire.send(sock, wire.LOOKUP, b"\xff\xff\xff")
    kind, payload = wire.receive(sock, limit)
    assert wire.parse_error(payload) == (
        "INVALID_ARGUMENT",
        "a Lookup frame that is not its protobuf",
    )
    # The connection still serves: a good Lookup after the bad ones.
    wire.send(sock, wire.LOOKUP, pb.KvLookupRequest(keys=KEYS).SerializeToString())
    kind, payload = wire.receive(sock, limit)
    assert kind == wire.OK and pb.KvLookupResponse.FromString(payload).matched == 2
    # A frame over the message limit: RESOURCE_EXHAUSTED, then the connection is closed.
    sock.sendall(wire.HEADER.pack(limit + 1, wire.LOOKUP))
    kind, payload = wire.receive(sock, limit)
    code, message = wire.parse_error(payload)
    assert code == "RESOURCE_EXHAUSTED" and str(limit) in message
    with pytest.raises(EOFError):
        wire.receive(sock, limit)
    sock.close()

    # A connection must open with HELLO.
    sock = _raw(root)
    wire.send(sock, wire.LOOKUP, pb.KvLookupRequest(keys=KEYS).SerializeToString())
    kind, payload = wire.receive(sock, limit)
    assert wire.parse_error(payload)[0] == "INVALID_ARGUMENT" and "HELLO" in payload.decode()
    sock.close()
    sock = _raw(root)
    wire.send(sock, wire.HELLO, b'{"authorization": 1}')
    kind, payload = wire.receive(sock, limit)
    assert wire.parse_error(payload)[0] == "INVALID_ARGUMENT"
    sock.close()

    assert local(handle, root, "acme").lookup(KEYS).matched == 2, "the daemon still serves"


def test_without_a_socket_the_calls_go_over_grpc(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> None:
    root, handle, _ = serve(start_kv, connect, tmp_path, 2, lookup_socket=False)
    assert handle.server.lookup_socket is None and not (root / SOCKET_NAME).exists()
    kv = local(handle, root, "acme")
    found = kv.lookup(KEYS, pin=True)
    assert found.matched == 2 and kv.release(found.lease_id)
    assert kv.local_calls == 0
    with pytest.raises(NoLocalSocket):
        LocalChannel(root / SOCKET_NAME, (), 1.0).call(
            wire.LOOKUP, pb.KvLookupRequest(keys=KEYS), pb.KvLookupResponse
        )


def test_sent_calls_answer_later_and_a_client_keeps_few_connections(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> None:
    """Lookups sent without waiting each hold a connection until their answer is read; with
    every connection of a client waiting, its next call goes over gRPC (still answered)."""
    from memos.client_local import MAX_CONNECTIONS

    root, handle, grpc_kv = serve(start_kv, connect, tmp_path, 3)
    kv = local(handle, root, "acme")
    sent = [kv.send_lookup(KEYS, pin=True) for _ in range(MAX_CONNECTIONS)]
    assert kv.lookup(KEYS).matched == 3 and kv.local_calls == 0, "over gRPC: all are busy"
    with pytest.raises(NoLocalSocket, match="busy"):
        kv.send_lookup(KEYS)
    answers = [s.result(10) for s in sent]
    assert all(a.pinned == 3 and a.lease_id for a in answers)
    assert kv.local_calls == MAX_CONNECTIONS
    releases = [kv.send_release(a.lease_id) for a in answers]
    assert all(r.result(10).released for r in releases)
    assert grpc_kv.stats().leases == 0
    # The connections were given back: the next calls reuse them.
    assert kv.lookup(KEYS).matched == 3 and kv.local_calls == 2 * MAX_CONNECTIONS + 1
    kv.close()


def test_a_stopped_daemon_removes_its_socket(start_kv: StartKv, tmp_path: Path) -> None:
    root = tmp_path / "shm"
    handle = shared_server(start_kv, root)
    kv = local(handle, root, "acme")
    assert kv.lookup(KEYS).matched == 0 and kv.local_calls == 1
    handle.server.stop(grace_s=1)
    assert not (root / SOCKET_NAME).exists()
    # The open connection was closed, and nothing listens any more: the call goes to gRPC,
    # which fails as Unavailable (a miss to an engine); a stopped daemon never answers.
    from memos.errors import Unavailable

    with pytest.raises(Unavailable):
        kv.lookup(KEYS)


def test_a_lookup_names_the_leading_files_the_directory_holds_and_releases_their_holds(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> None:
    root, handle, _ = serve(start_kv, connect, tmp_path, 4)
    tier = handle.server.kernel().activation
    assert tier is not None and tier.shared is not None
    level = tier.shared.level
    namespace = tier.namespace("acme")
    assert level.delete(namespace + KEYS[2]), "the third chunk's file is gone; RAM keeps it"

    kv = local(handle, root, "acme")
    found = kv.lookup(KEYS, pin=True, shared_dir_id=read_shared_id(root))
    assert (found.matched, found.pinned) == (4, 4)
    assert [f.path for f in found.files] == [level.relative_path(namespace + k) for k in KEYS[:2]]
    assert tier.shared.holds() == 1
    # The held files are pinned: a full level cannot evict them until the release.
    pinned = [namespace + k for k in KEYS[:2]]
    assert all(level.is_pinned(k) for k in pinned)
    assert kv.release(found.lease_id)
    assert tier.shared.holds() == 0
    assert not any(level.is_pinned(k) for k in pinned)


def test_a_connection_kept_across_a_daemon_restart_is_made_anew(
    start_kv: StartKv, connect: Connect, tmp_path: Path
) -> None:
    root, first, _ = serve(start_kv, connect, tmp_path, 2)
    kv = local(first, root, "acme")
    # Two connections kept: two calls out at once, then both answered.
    both = [kv.send_lookup(KEYS), kv.send_lookup(KEYS)]
    assert [call.result(10).matched for call in both] == [2, 2]
    assert kv.lookup(KEYS).matched == 2 and kv.local_calls == 3
    first.server.stop(grace_s=1)
    second = shared_server(start_kv, root)  # the same directory: its files are still there
    assert second.server.lookup_socket is not None
    # The kept connection went with the first daemon: the call is made again on a new one,
    # to the second daemon, not failed.
    assert kv.lookup(KEYS).matched == 2 and kv.local_calls == 4
    assert second.server.lookup_socket.requests == 1
    sent = kv.send_lookup(KEYS)
    assert sent.result(10).matched == 2 and second.server.lookup_socket.requests == 2
