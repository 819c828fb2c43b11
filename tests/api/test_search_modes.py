"""Search modes and Reindex over a real gRPC server on localhost (MemosClient and raw stubs)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from memos.client import CubeInput, MemosClient
from memos.errors import InvalidArgument, PermissionDenied
from memos.v1 import memcube_pb2 as pb
from memos.v1 import memcube_pb2_grpc as pb_grpc
from tests.fixtures.daemon import ServerHandle, start_server

PLACES = ["bank", "email", "streaming", "office", "gym", "library", "school", "cloud"]
PLACES += ["phone", "laptop", "router", "bike lock", "alarm", "shop", "forum", "game"]
CONTRACT = "Budget meeting notes: the vendor contract id is XQ7Z4, renewal due in March."
QUERY = "XQ7Z4 password"


def client(handle: ServerHandle, who: str, tenant: str | None = None) -> MemosClient:
    return MemosClient(handle.addr, token=handle.tokens[who], tenant=tenant)


def fill(memos: MemosClient, namespace: str = "default") -> str:
    memos.put_batch(
        CubeInput(
            text=f"Remember the password for the {p} account and keep it private.",
            namespace=namespace,
        )
        for p in PLACES
    )
    return memos.put(CONTRACT, namespace=namespace).id


def test_each_mode_over_grpc_and_hybrid_is_the_default(server: ServerHandle) -> None:
    with client(server, "acme") as memos:
        target = fill(memos)
        lexical = memos.search(QUERY, k=5, mode="lexical")
        assert lexical[0].cube.id == target
        assert target not in [h.cube.id for h in memos.search(QUERY, k=5, mode="dense")]
        hybrid = memos.search(QUERY, k=5, mode="hybrid")
        assert target in [h.cube.id for h in hybrid[:3]]
        default = memos.search(QUERY, k=5)
        assert [(h.cube.id, h.score) for h in default] == [(h.cube.id, h.score) for h in hybrid]
        # A query embedding alone: dense ranks it, hybrid falls back to dense, lexical refuses.
        vector = memos.get(target, include_embedding=True).plaintext.embedding  # type: ignore[union-attr]
        assert vector is not None
        assert memos.search("", query_embedding=vector, k=1, mode="dense")[0].cube.id == target
        assert memos.search("", query_embedding=vector, k=1)[0].cube.id == target
        with pytest.raises(InvalidArgument, match="lexical search needs a query text"):
            memos.search("", query_embedding=vector, mode="lexical")
    with server.channel() as ch:
        stub = pb_grpc.MemCubeServiceStub(ch)  # type: ignore[no-untyped-call]
        md = [("authorization", f"Bearer {server.tokens['acme']}")]
        with pytest.raises(grpc.RpcError) as err:
            stub.Search(pb.SearchRequest(query="x", mode=9), metadata=md)  # type: ignore[arg-type]
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        got = stub.Search(
            pb.SearchRequest(query=QUERY, k=1, mode=pb.SEARCH_MODE_LEXICAL), metadata=md
        )
        assert got.hits[0].cube.id == target and got.hits[0].score > 0


def test_no_mode_leaks_another_tenant_or_namespace(server: ServerHandle) -> None:
    with client(server, "acme") as acme, client(server, "globex") as globex:
        fill(acme, "work")
        mine = acme.put(CONTRACT, namespace="home").id
        theirs = fill(globex, "home")
        for mode in ("dense", "lexical", "hybrid"):
            hits = acme.search(QUERY, k=50, mode=mode, namespaces=["home"])
            assert [h.cube.id for h in hits] == [mine], mode
            other = globex.search(QUERY, k=50, mode=mode)
            assert theirs in [h.cube.id for h in other]
            assert {h.cube.tenant for h in other} == {"globex"}, mode


def test_reindex_after_a_template_change(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_server(data, tokens=True)
    try:
        with client(first, "acme") as memos:
            ids = [
                c.id
                for c in memos.put_batch(
                    CubeInput(text=t, namespace="chat", metadata={"speaker": s})
                    for t, s in [("I planted tulips.", "Odalys"), ("I fixed the bike.", "Bram")]
                )
            ]
            assert memos.search("Odalys", mode="lexical") == []
    finally:
        first.server.stop(grace_s=1)

    second = start_server(
        data,
        tokens=True,
        plaintext={"embed_templates": {"chat": "{speaker}: {text}"}, "search_mode": "lexical"},
    )
    try:
        with client(second, "acme") as memos, pytest.raises(PermissionDenied, match="admin"):
            list(memos.reindex())
        with client(second, "admin", tenant="acme") as ops:
            assert list(ops.reindex(["chat"])) == [(0, 2), (2, 2)]
            assert list(ops.reindex(["chat"])) == [(0, 0)]
            assert list(ops.reindex(everything=True)) == [(0, 2), (2, 2)]
        with client(second, "acme") as memos:
            hits = memos.search("Odalys")  # this daemon's default mode: lexical
            assert [h.cube.id for h in hits] == [ids[0]]
            assert len(memos.search("Odalys", mode="dense")) == 2
            assert hits[0].cube.version == 1 and hits[0].cube.text == "I planted tulips."
    finally:
        second.server.stop(grace_s=1)
