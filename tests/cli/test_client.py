"""MemosClient against a real gRPC server on localhost (tests/fixtures/daemon.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from memos.client import ChangeEvent, ChangeType, MemosClient
from memos.cube import CubeInput, Kind, Source, State
from memos.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from tests.fixtures.daemon import ServerHandle, free_port


def client(handle: ServerHandle, who: str = "acme", **kwargs: object) -> MemosClient:
    return MemosClient(handle.addr, token=handle.tokens[who], **kwargs)  # type: ignore[arg-type]


def test_put_returns_the_stored_cube_and_get_reads_it_back(server: ServerHandle) -> None:
    with client(server) as memos:
        before = datetime.now(UTC)
        cube = memos.put(
            "The deploy key rotates every Monday",
            namespace="ops",
            tags=["ops", "keys"],
            metadata={"team": "infra"},
            ttl_seconds=3600,
            pinned=True,
            priority=3,
            source=Source(writer="agent-7", session_id="s1", message_id="m9"),
        )
        assert cube.tenant == "acme"
        assert cube.version == 1
        assert cube.kind == Kind.PLAINTEXT and cube.state == State.ACTIVE
        assert cube.text == "The deploy key rotates every Monday"
        assert (cube.namespace, cube.tags, cube.metadata) == (
            "ops",
            ("ops", "keys"),
            {"team": "infra"},
        )
        assert cube.pinned and cube.priority == 3
        assert cube.source.writer == "agent-7" and cube.source.message_id == "m9"
        assert cube.expires_at is not None
        assert timedelta(seconds=3590) < cube.expires_at - before < timedelta(seconds=3610)

        got = memos.get(cube.id)
        assert got.model_dump(exclude={"access"}) == cube.model_dump(exclude={"access"})
        assert got.plaintext is not None and got.plaintext.embedding is None
        full = memos.get(cube.id, include_embedding=True)
        assert full.plaintext is not None and full.plaintext.embedding is not None
        assert len(full.plaintext.embedding) == memos.stats().embedding_dim


def test_a_writer_name_is_a_source_shorthand(server: ServerHandle) -> None:
    with client(server) as memos:
        assert memos.put("a note", source="cron").source == Source(writer="cron")


def test_search_finds_the_paraphrased_cube_first(server: ServerHandle) -> None:
    with client(server) as memos:
        target = memos.put("The deploy key rotates every Monday", tags=["ops"])
        memos.put("Alice is allergic to peanuts", tags=["people"])
        memos.put("The Lisbon office wifi password is under the router", tags=["office"])
        hits = memos.search("when do we rotate keys?", k=3)
        assert hits[0].cube.id == target.id
        assert hits[0].score >= hits[-1].score
        only_people = memos.search("when do we rotate keys?", tags=["people"])
        assert {h.cube.text for h in only_people} == {"Alice is allergic to peanuts"}
        future = datetime.now(UTC) + timedelta(hours=1)
        assert memos.search("keys", created_after=future) == []


def test_naive_datetimes_and_unknown_choices_are_refused_before_sending(
    server: ServerHandle,
) -> None:
    with client(server) as memos:
        with pytest.raises(InvalidArgument, match="timezone-aware"):
            memos.search("x", created_after=datetime(2025, 1, 1))
        with pytest.raises(InvalidArgument, match="dense, lexical, hybrid"):
            memos.search("x", mode="fuzzy")
        with pytest.raises(InvalidArgument, match="active, archived, tombstone"):
            list(memos.list(states=["gone"]))


def test_update_makes_a_version_and_history_keeps_the_old_one(server: ServerHandle) -> None:
    with client(server) as memos:
        cube = memos.put("first words", tags=["a"], metadata={"k": "v"})
        v2 = memos.update(cube.id, text="second words", tags=[], pinned=True)
        assert (v2.version, v2.text, v2.tags, v2.pinned) == (2, "second words", (), True)
        assert v2.metadata == {"k": "v"}  # not given: kept
        assert [c.text for c in memos.history(cube.id)] == ["first words", "second words"]
        assert memos.get(cube.id, version=1).text == "first words"
        with pytest.raises(FailedPrecondition):
            memos.update(cube.id, priority=5, expected_version=1)
        assert memos.update(cube.id, priority=5, expected_version=2).priority == 5


def test_delete_then_get_is_not_found_with_the_servers_message(server: ServerHandle) -> None:
    with client(server) as memos:
        cube = memos.put("short-lived")
        deleted = memos.delete(cube.id)
        assert deleted.id == cube.id and deleted.version == 2
        with pytest.raises(NotFound, match=cube.id) as info:
            memos.get(cube.id)
        assert info.value.code == "NOT_FOUND"
        tombstones = list(memos.list(states=[State.TOMBSTONE]))
        assert [c.id for c in tombstones] == [cube.id]


def test_list_follows_every_page(server: ServerHandle) -> None:
    with client(server) as memos:
        ids = [c.id for c in memos.put_batch([CubeInput(text=f"note {i}") for i in range(7)])]
        first = memos.list_page(page_size=3)
        assert len(first.cubes) == 3 and first.next_page_token
        assert [c.id for c in memos.list(page_size=3)] == ids
        assert [c.id for c in memos.list(namespaces=["nowhere"])] == []


def test_put_batch_keeps_input_order_and_fields(server: ServerHandle) -> None:
    with client(server) as memos:
        inputs = [
            CubeInput(text=f"batch item {i}", namespace=f"ns{i % 2}", tags=(f"t{i}",), priority=i)
            for i in range(5)
        ]
        stored = memos.put_batch(inputs)
        assert [(c.text, c.namespace, c.tags, c.priority) for c in stored] == [
            (i.text, i.namespace, i.tags, i.priority) for i in inputs
        ]
        assert len({c.id for c in stored}) == 5


def test_errors_are_typed_and_carry_the_servers_message(server: ServerHandle) -> None:
    with client(server) as memos:
        with pytest.raises(InvalidArgument, match="text is empty"):
            memos.put("   ")
        with pytest.raises(InvalidArgument, match="malformed cube id"):
            memos.get("not-an-id")
        with pytest.raises(NotFound):
            memos.get("01JDZ8Q3V2X7G4M5N6P7R8S9T0")
    with MemosClient(server.addr) as anonymous, pytest.raises(Unauthenticated, match="token"):
        anonymous.stats()
    with MemosClient(server.addr, token="wrong") as wrong, pytest.raises(Unauthenticated):
        wrong.stats()
    with client(server, "reader") as reader, pytest.raises(PermissionDenied):
        reader.put("readers cannot write")


def test_another_tenant_never_sees_the_cube(server: ServerHandle) -> None:
    with client(server, "acme") as acme, client(server, "globex") as globex:
        cube = acme.put("acme's secret roadmap")
        with pytest.raises((NotFound, PermissionDenied)):
            globex.get(cube.id)
        assert list(globex.list()) == []
        assert globex.search("roadmap") == []
        with pytest.raises((NotFound, PermissionDenied)):
            globex.delete(cube.id)
        assert acme.get(cube.id).state == State.ACTIVE


def test_an_unreachable_daemon_names_its_address() -> None:
    addr = f"127.0.0.1:{free_port()}"
    with MemosClient(addr, timeout=5) as memos, pytest.raises(Unavailable) as info:
        memos.put("nobody listens")
    assert addr in str(info.value) and "memosd" in str(info.value)


def test_a_request_over_the_message_limit_says_what_to_do(server: ServerHandle) -> None:
    with client(server, max_message_bytes=64 * 1024) as memos:
        inputs = [CubeInput(text="x" * 2000 + str(i)) for i in range(100)]
        with pytest.raises(ResourceExhausted, match="max_message_bytes"):
            memos.put_batch(inputs)
        assert memos.put("still serving").version == 1


def test_health_and_stats(server: ServerHandle) -> None:
    with client(server) as memos:
        assert memos.health() == "SERVING"
        memos.put_batch([CubeInput(text="one", namespace="a"), CubeInput(text="two")])
        stats = memos.stats()
        assert stats.cubes == 2
        assert stats.by_namespace == {"a": 1, "default": 1}
        assert stats.embedding_dim > 0 and stats.embedding_model


def test_one_client_is_shared_by_threads(server: ServerHandle) -> None:
    with client(server) as memos, ThreadPoolExecutor(8) as pool:
        cubes = list(pool.map(lambda i: memos.put(f"parallel note {i}"), range(24)))
        assert len({c.id for c in cubes}) == 24
        assert memos.stats().cubes == 24


def test_watch_sees_a_put_by_another_client_and_cancels_cleanly(server: ServerHandle) -> None:
    events: list[ChangeEvent] = []
    with client(server) as watcher, client(server) as writer:
        stream = watcher.watch()  # returns once subscribed: no change after this is missed
        done = threading.Event()

        def follow() -> None:
            for event in stream:
                events.append(event)
                if event.type == ChangeType.DELETE:
                    break
            done.set()

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        cube = writer.put("watched note", namespace="live")
        writer.delete(cube.id)
        assert done.wait(20), f"the watch saw only {events}"
        assert [(e.type, e.id, e.version) for e in events] == [
            (ChangeType.PUT, cube.id, 1),
            (ChangeType.DELETE, cube.id, 2),
        ]
        assert events[0].cube is not None and events[0].cube.text == "watched note"
        assert events[0].namespace == "live" and events[0].at is not None
        # A cancelled stream ends its iteration without an error.
        idle = watcher.watch(namespaces=["quiet"])
        timer = threading.Timer(0.5, idle.cancel)
        timer.start()
        assert list(idle) == []


def test_watch_of_an_unauthenticated_caller_fails_at_once(server: ServerHandle) -> None:
    with MemosClient(server.addr) as anonymous, pytest.raises(Unauthenticated):
        anonymous.watch()


def test_dev_mode_tenants_come_from_the_tenant_header(dev_server: ServerHandle) -> None:
    with (
        MemosClient(dev_server.addr) as default,
        MemosClient(dev_server.addr, tenant="team-a") as team_a,
    ):
        cube = team_a.put("team a's note")
        assert cube.tenant == "team-a"
        assert default.put("anyone's note").tenant == "default"
        with pytest.raises(NotFound):
            default.get(cube.id)
    with (
        MemosClient(dev_server.addr, tenant="Bad Tenant!") as bad,
        pytest.raises(InvalidArgument, match="tenant"),
    ):
        bad.stats()
