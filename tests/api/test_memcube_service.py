"""End-to-end tests of MemCubeService over a real gRPC server on localhost."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from memos.v1 import memcube_pb2 as pb
from memos.v1 import memcube_pb2_grpc as pb_grpc
from tests.fixtures.daemon import ServerHandle

# (stored text, a paraphrased query that must find it first)
PARAPHRASES = [
    (
        "The deploy key for the billing service rotates every Monday at 09:00 UTC.",
        "when does the billing deploy key get rotated?",
    ),
    (
        "Alice is allergic to peanuts and carries an epinephrine pen.",
        "what food allergy does Alice have?",
    ),
    (
        "Our Postgres primary runs in the Frankfurt region; the replica is in Dublin.",
        "which region hosts the main database?",
    ),
    (
        "The quarterly planning meeting moved from Thursday to Friday afternoon.",
        "what day is the quarterly planning now?",
    ),
    (
        "Bob prefers tea over coffee and drinks it without sugar.",
        "how does Bob take his hot drink?",
    ),
    (
        "The wifi password in the Lisbon office is printed under the router.",
        "where can I find the Lisbon office network password?",
    ),
    (
        "Invoices above 10,000 euros need approval from the finance director.",
        "who must approve large invoices?",
    ),
    (
        "The mobile app crashes on Android 12 when the camera permission is denied.",
        "what causes the android app to crash?",
    ),
    ("Carol's daughter starts primary school in September.", "when does Carol's kid begin school?"),
    (
        "Backups of the object store are kept for 35 days before deletion.",
        "how long do we retain object storage backups?",
    ),
]


def md(handle: ServerHandle, who: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {handle.tokens[who]}")]


def stub(handle: ServerHandle) -> pb_grpc.MemCubeServiceStub:
    return pb_grpc.MemCubeServiceStub(handle.channel())


def put(
    s: pb_grpc.MemCubeServiceStub, meta: list[tuple[str, str]], text: str, **kw: object
) -> pb.MemCube:
    return s.Put(pb.PutRequest(cube=pb.CubeInput(text=text, **kw)), metadata=meta).cube


def code_of(call: object) -> grpc.StatusCode:
    assert isinstance(call, grpc.RpcError)
    return call.code()


def test_health_and_reflection_are_on(server: ServerHandle) -> None:
    ch = server.channel()
    health = health_pb2_grpc.HealthStub(ch)
    for name in ("", "memos.v1.MemCubeService"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    refl = reflection_pb2_grpc.ServerReflectionStub(ch)
    responses = refl.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"memos.v1.MemCubeService", "grpc.health.v1.Health"} <= names


def test_thousand_cubes_and_paraphrases_find_their_cube_first(server: ServerHandle) -> None:
    s, meta = stub(server), md(server, "acme")
    filler = [
        pb.CubeInput(
            text=f"Note {i}: routine log line about build {i} on runner {i % 17}.",
            namespace="filler",
            tags=["log"],
        )
        for i in range(1000 - len(PARAPHRASES))
    ]
    for start in range(0, len(filler), 250):
        resp = s.PutBatch(pb.PutBatchRequest(cubes=filler[start : start + 250]), metadata=meta)
        assert len(resp.cubes) == len(filler[start : start + 250])
    ids = [put(s, meta, text, namespace="facts").id for text, _ in PARAPHRASES]
    stats = s.Stats(pb.StatsRequest(), metadata=meta)
    assert stats.cubes == 1000
    for cube_id, (_, query) in zip(ids, PARAPHRASES, strict=True):
        hits = s.Search(pb.SearchRequest(query=query, k=5), metadata=meta).hits
        assert hits[0].cube.id == cube_id, (query, [h.cube.plaintext.text for h in hits])
        assert hits[0].score >= hits[-1].score


def test_update_gives_version_two_with_history_and_delete_gives_not_found(
    server: ServerHandle,
) -> None:
    s, meta = stub(server), md(server, "acme")
    cube = put(s, meta, "The office closes at 6pm.", tags=["office"])
    assert cube.version == 1
    updated = s.Update(
        pb.UpdateRequest(id=cube.id, text="The office closes at 7pm.", expected_version=1),
        metadata=meta,
    ).cube
    assert updated.version == 2 and updated.plaintext.text == "The office closes at 7pm."
    assert list(updated.tags) == ["office"]
    history = s.History(pb.HistoryRequest(id=cube.id), metadata=meta).versions
    assert [v.version for v in history] == [1, 2]
    assert history[0].plaintext.text == "The office closes at 6pm."
    old = s.Get(pb.GetRequest(id=cube.id, version=1), metadata=meta).cube
    assert old.plaintext.text == "The office closes at 6pm."
    hits = s.Search(pb.SearchRequest(query="when does the office close?", k=3), metadata=meta).hits
    assert [h.cube.version for h in hits if h.cube.id == cube.id] == [2]

    with pytest.raises(grpc.RpcError) as stale:
        s.Update(pb.UpdateRequest(id=cube.id, text="x", expected_version=1), metadata=meta)
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    deleted = s.Delete(pb.DeleteRequest(id=cube.id), metadata=meta)
    assert deleted.version == 3
    with pytest.raises(grpc.RpcError) as gone:
        s.Get(pb.GetRequest(id=cube.id), metadata=meta)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert "deleted" in (gone.value.details() or "")
    hits = s.Search(pb.SearchRequest(query="when does the office close?", k=3), metadata=meta).hits
    assert cube.id not in {h.cube.id for h in hits}
    listed = s.List(pb.ListRequest(), metadata=meta).cubes
    assert cube.id not in {c.id for c in listed}
    tomb = s.List(
        pb.ListRequest(filter=pb.Filter(states=[pb.STATE_TOMBSTONE])), metadata=meta
    ).cubes
    assert [c.id for c in tomb] == [cube.id]


def test_tenant_b_never_sees_tenant_a(server: ServerHandle) -> None:
    s = stub(server)
    a, b = md(server, "acme"), md(server, "globex")
    secret = put(s, a, "Acme's launch code word is PELICAN-42.", namespace="secrets", tags=["x"])
    # Search, List, Get, History, Update, Delete, Stats, Watch: none reveal or touch A's cube.
    hits = s.Search(pb.SearchRequest(query="launch code word PELICAN", k=10), metadata=b).hits
    assert all(h.cube.tenant == "globex" for h in hits) and secret.id not in {
        h.cube.id for h in hits
    }
    assert s.List(pb.ListRequest(), metadata=b).cubes == []
    for call, req in [
        (s.Get, pb.GetRequest(id=secret.id)),
        (s.History, pb.HistoryRequest(id=secret.id)),
        (s.Update, pb.UpdateRequest(id=secret.id, text="hijacked")),
        (s.Delete, pb.DeleteRequest(id=secret.id)),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            call(req, metadata=b)
        assert err.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)
        assert "PELICAN" not in (err.value.details() or "")
    assert s.Stats(pb.StatsRequest(), metadata=b).cubes == 0
    # A non-admin token cannot switch tenants with the tenant header.
    with pytest.raises(grpc.RpcError) as err:
        s.List(pb.ListRequest(), metadata=[*b, ("x-memos-tenant", "acme")])
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A's cube is intact.
    got = s.Get(pb.GetRequest(id=secret.id), metadata=a).cube
    assert got.version == 1 and got.plaintext.text.startswith("Acme's launch")


def test_watch_sees_only_own_tenant_changes(server: ServerHandle) -> None:
    s = stub(server)
    a, b = md(server, "acme"), md(server, "globex")
    stream = s.Watch(pb.WatchRequest(), metadata=b)
    received: list[pb.ChangeEvent] = []

    def consume() -> None:
        try:
            for event in stream:
                received.append(event)
        except grpc.RpcError:
            pass

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    time.sleep(0.3)
    put(s, a, "acme-only event")
    mine = put(s, b, "globex event")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not received:
        time.sleep(0.05)
    stream.cancel()
    t.join(5)
    assert [e.id for e in received] == [mine.id]
    assert received[0].type == pb.CHANGE_TYPE_PUT and received[0].cube.tenant == "globex"


def test_read_only_token_cannot_write(server: ServerHandle) -> None:
    s = stub(server)
    with pytest.raises(grpc.RpcError) as err:
        put(s, md(server, "reader"), "should not be stored")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "write" in (err.value.details() or "")
    assert s.Stats(pb.StatsRequest(), metadata=md(server, "acme")).cubes == 0


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ([], grpc.StatusCode.UNAUTHENTICATED),
        ([("authorization", "Bearer wrong-token")], grpc.StatusCode.UNAUTHENTICATED),
        ([("authorization", "Basic dXNlcjpwYXNz")], grpc.StatusCode.UNAUTHENTICATED),
    ],
)
def test_missing_or_wrong_token(
    server: ServerHandle, metadata: list[tuple[str, str]], code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub(server).List(pb.ListRequest(), metadata=metadata)
    assert err.value.code() == code
    assert err.value.details()


def test_bad_input_gets_actionable_statuses_and_the_daemon_keeps_serving(
    server: ServerHandle,
) -> None:
    s, meta = stub(server), md(server, "acme")
    limit = server.settings.limits.max_text_bytes
    cases: list[tuple[object, object, grpc.StatusCode, str]] = [
        (
            s.Put,
            pb.PutRequest(cube=pb.CubeInput(text="")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "empty",
        ),
        (
            s.Put,
            pb.PutRequest(cube=pb.CubeInput(text="   ")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "empty",
        ),
        (
            s.Put,
            pb.PutRequest(cube=pb.CubeInput(text="x" * (limit + 1))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "limit",
        ),
        (
            s.Put,
            pb.PutRequest(cube=pb.CubeInput(text="ok", namespace="bad ns!")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "namespace",
        ),
        (
            s.Put,
            pb.PutRequest(cube=pb.CubeInput(text="ok", tags=["a,b"])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "tag",
        ),
        (
            s.Put,
            pb.PutRequest(cube=pb.CubeInput(text="ok", embedding=[0.1, 0.2])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "dimensions",
        ),
        (
            s.Put,
            pb.PutRequest(cube=pb.CubeInput(text="ok", embedding_f32=b"\x00" * 10)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "4 bytes each",
        ),
        (
            s.Put,
            pb.PutRequest(cube=pb.CubeInput(text="ok", embedding_f32=b"\x00" * 8)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "dimensions",
        ),
        (
            s.Put,
            pb.PutRequest(
                cube=pb.CubeInput(text="ok", embedding=[0.5], embedding_f32=b"\x00\x00\x00?")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "embedding_f32",
        ),
        (
            s.Put,
            pb.PutRequest(cube=pb.CubeInput(text="ok", ttl_seconds=10**12)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ttl",
        ),
        (s.Get, pb.GetRequest(id="not-an-id"), grpc.StatusCode.INVALID_ARGUMENT, "ULID"),
        (
            s.Get,
            pb.GetRequest(id="01JDZ8Q3V2X7G4M5N6P7R8S9T0"),
            grpc.StatusCode.NOT_FOUND,
            "no cube",
        ),
        (s.Delete, pb.DeleteRequest(id=""), grpc.StatusCode.INVALID_ARGUMENT, "ULID"),
        (s.Search, pb.SearchRequest(query=""), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        (s.Search, pb.SearchRequest(query="x", k=100000), grpc.StatusCode.INVALID_ARGUMENT, "k="),
        (s.List, pb.ListRequest(page_token="garbage!"), grpc.StatusCode.INVALID_ARGUMENT, "token"),
        (
            s.Update,
            pb.UpdateRequest(id="01JDZ8Q3V2X7G4M5N6P7R8S9T0"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "changes nothing",
        ),
    ]
    for call, req, code, word in cases:
        with pytest.raises(grpc.RpcError) as err:
            call(req, metadata=meta)  # type: ignore[operator]
        assert err.value.code() == code, (req, err.value.details())
        assert word.lower() in (err.value.details() or "").lower(), (req, err.value.details())
    # A bad tenant name in development-style headers is rejected for admins too.
    with pytest.raises(grpc.RpcError) as err:
        s.List(pb.ListRequest(), metadata=[*md(server, "admin"), ("x-memos-tenant", "Bad Tenant")])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # An oversized message is refused by the transport limit.
    big = server.settings.limits.max_message_bytes
    with pytest.raises(grpc.RpcError) as err:
        s.Put(pb.PutRequest(cube=pb.CubeInput(text="y" * (big + 10))), metadata=meta)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Still serving.
    assert put(s, meta, "still alive").version == 1


def test_admin_can_act_for_a_tenant(server: ServerHandle) -> None:
    s = stub(server)
    cube = put(s, md(server, "acme"), "visible to ops")
    meta = [*md(server, "admin"), ("x-memos-tenant", "acme")]
    assert s.Get(pb.GetRequest(id=cube.id), metadata=meta).cube.id == cube.id
    # Without the header the admin sees its own tenant only.
    assert s.List(pb.ListRequest(), metadata=md(server, "admin")).cubes == []


def test_expired_cubes_are_never_returned(server: ServerHandle) -> None:
    s, meta = stub(server), md(server, "acme")
    cube = put(s, meta, "This reminder expires very soon.", ttl_seconds=1)
    assert cube.HasField("expires_at")
    time.sleep(1.2)
    with pytest.raises(grpc.RpcError) as err:
        s.Get(pb.GetRequest(id=cube.id), metadata=meta)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "expired" in (
        err.value.details() or ""
    )
    assert cube.id not in {
        h.cube.id
        for h in s.Search(pb.SearchRequest(query="reminder expires soon", k=5), metadata=meta).hits
    }
    assert cube.id not in {c.id for c in s.List(pb.ListRequest(), metadata=meta).cubes}


def test_list_paginates_and_filters(server: ServerHandle) -> None:
    s, meta = stub(server), md(server, "acme")
    made = [
        put(s, meta, f"item {i}", namespace="a" if i % 2 else "b", tags=["t"] if i < 4 else [])
        for i in range(7)
    ]
    seen: list[str] = []
    token = ""
    while True:
        resp = s.List(pb.ListRequest(page_size=3, page_token=token), metadata=meta)
        seen.extend(c.id for c in resp.cubes)
        token = resp.next_page_token
        if not token:
            break
    assert seen == [c.id for c in made]  # ids are time-sortable: creation order
    ns_a = s.List(pb.ListRequest(filter=pb.Filter(namespaces=["a"])), metadata=meta).cubes
    assert {c.id for c in ns_a} == {c.id for i, c in enumerate(made) if i % 2}
    tagged_a = s.List(
        pb.ListRequest(filter=pb.Filter(namespaces=["a"], tags=["t"])), metadata=meta
    ).cubes
    assert {c.id for c in tagged_a} == {made[1].id, made[3].id}
    after = pb.Filter()
    after.created_after.CopyFrom(made[4].created_at)
    later = s.List(pb.ListRequest(filter=after), metadata=meta).cubes
    assert {c.id for c in later} <= {c.id for c in made[4:]}
    assert {c.id for c in later} >= {c.id for c in made[5:]}


def test_both_embedding_forms_store_the_exact_vector(server: ServerHandle) -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((3, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with server.channel() as ch:
        stub = pb_grpc.MemCubeServiceStub(ch)  # type: ignore[no-untyped-call]
        auth = md(server, "acme")
        put = stub.PutBatch(
            pb.PutBatchRequest(
                cubes=[
                    pb.CubeInput(text="as bytes", embedding_f32=vectors[0].astype("<f4").tobytes()),
                    pb.CubeInput(text="as floats", embedding=vectors[1].tolist()),
                    pb.CubeInput(text="bytes again", embedding_f32=vectors[2].tobytes()),
                ]
            ),
            metadata=auth,
        )
        for sent, cube in zip(vectors, put.cubes, strict=True):
            got = stub.Get(pb.GetRequest(id=cube.id, include_embedding=True), metadata=auth).cube
            assert got.plaintext.embedding_model == "all-MiniLM-L6-v2"
            assert np.array_equal(np.array(got.plaintext.embedding, dtype=np.float32), sent)
        hit = stub.Search(
            pb.SearchRequest(query_embedding=vectors[2].tolist(), k=1, mode=pb.SEARCH_MODE_DENSE),
            metadata=auth,
        ).hits[0]
        assert hit.cube.id == put.cubes[2].id and hit.score == pytest.approx(1.0, abs=1e-5)
