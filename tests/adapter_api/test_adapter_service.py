"""AdapterService over a real gRPC server on localhost, with the tiny model as base model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import torch
from safetensors.torch import save

from memos.cube import Kind, State
from memos.errors import (
    FailedPrecondition,
    InvalidArgument,
    MemosError,
    NotFound,
    PermissionDenied,
)
from memos.tiers.parameter.fingerprint import BaseModelSpec
from memos.tiers.parameter.names import CONFIG_FILE, WEIGHTS_FILE
from memos.tiers.parameter.weights import canonical_json, factor_key
from memos.v1 import adapter_pb2 as pb
from memos.v1 import adapter_pb2_grpc as pb_grpc
from tests.adapter_api.conftest import Clients
from tests.adapter_api.helpers import adapters_of, files_of, read_back, store_tree
from tests.fixtures.adapters import random_adapter, write_adapter
from tests.fixtures.daemon import ServerHandle

Q0 = "model.layers.0.self_attn.q_proj"


def test_upload_list_get_and_delete_with_their_cubes(
    clients: Clients, lora_base_spec: BaseModelSpec, tmp_path: Path
) -> None:
    adapters, memos = clients.adapters(), clients.memos()
    folder = write_adapter(tmp_path / "tone", random_adapter(lora_base_spec, seed=1))
    # Small chunks: the files cross the stream in many messages.
    first = adapters.register(folder, name="tone", metadata={"team": "support"}, chunk_bytes=999)
    a = first.adapter
    assert first.created and a.ref == "tone@v1" and a.tenant == "acme" and a.origin == "upload"
    assert a.rank == 4 and a.target_modules == ("q_proj", "v_proj") and a.modules == 4
    assert a.base_model == lora_base_spec.model_id and a.metadata == {"team": "support"}
    stored = read_back(a.path, clients.handle)
    assert torch.equal(stored.modules[Q0].a, random_adapter(lora_base_spec, seed=1).modules[Q0].a)

    # The adapter is a parameter cube with the same id.
    cube = memos.get(a.id)
    assert cube.kind == Kind.PARAMETER and cube == first.cube and cube.parameter is not None
    assert cube.parameter.weights_sha256 == a.digest and cube.parameter.uri == a.path
    assert cube.parameter.base_model_fingerprint == lora_base_spec.model_id
    assert cube.parameter.rank == 4 and cube.parameter.target_modules == ("q_proj", "v_proj")
    assert cube.metadata["adapter.name"] == "tone" and cube.metadata["team"] == "support"
    assert [c.id for c in memos.list(kind="parameter")] == [a.id]

    # The same content again: the same version; changed weights: a new version, new path.
    again = adapters.register(folder, name="tone")
    assert not again.created and again.adapter.id == a.id
    write_adapter(folder, random_adapter(lora_base_spec, seed=2))
    v2 = adapters.register(folder, name="tone").adapter
    assert v2.version == 2 and v2.path != a.path and v2.id != a.id
    assert [x.ref for x in adapters.list()] == ["tone@v2"]
    assert [x.ref for x in adapters.list(all_versions=True)] == ["tone@v1", "tone@v2"]
    assert adapters.get("tone") == v2 and adapters.get("tone", version=1) == a
    assert adapters.get_by_id(a.id) == a
    assert {c.id for c in memos.list(kind="parameter")} == {a.id, v2.id}

    # Deleting one version tombstones its cube and drops its files; the other stays.
    assert [x.id for x in adapters.delete("tone", version=1)] == [a.id]
    assert not Path(a.path).exists() and Path(v2.path).exists()
    assert memos.history(a.id)[-1].state == State.TOMBSTONE
    with pytest.raises(NotFound):
        memos.get(a.id)
    with pytest.raises(NotFound):
        adapters.get("tone", version=1)
    assert [x.id for x in adapters.delete("tone")] == [v2.id]
    assert adapters.list(all_versions=True) == [] and list(memos.list(kind="parameter")) == []
    with pytest.raises(NotFound):
        adapters.delete("tone")


def test_register_from_a_daemon_path_needs_an_admin_token(
    clients: Clients, lora_base_spec: BaseModelSpec, tmp_path: Path
) -> None:
    folder = write_adapter(tmp_path / "on-host", random_adapter(lora_base_spec, seed=3))
    before = store_tree(clients.handle)
    with pytest.raises(PermissionDenied, match="admin"):
        clients.adapters("acme").register_path("host", str(folder))
    assert store_tree(clients.handle) == before
    # An admin acts on the tenant it names; the adapter is that tenant's.
    done = clients.adapters("admin", tenant="acme").register_path("host", str(folder))
    assert done.created and done.adapter.tenant == "acme" == done.cube.tenant
    assert [a.id for a in clients.adapters("acme").list()] == [done.adapter.id]
    with pytest.raises(InvalidArgument, match="relative"):
        clients.adapters("admin", tenant="acme").register_path("rel", "on-host")


def test_scopes_decide_who_reads_and_who_writes(
    clients: Clients, lora_base_spec: BaseModelSpec
) -> None:
    files = files_of(random_adapter(lora_base_spec, seed=4))
    a = clients.adapters("acme").register_files("scoped", files).adapter
    reader = clients.adapters("reader")
    assert [x.id for x in reader.list()] == [a.id] and reader.get("scoped") == a
    with pytest.raises(PermissionDenied, match="write"):
        reader.register_files("other", files)
    with pytest.raises(PermissionDenied, match="write"):
        reader.delete("scoped")
    with pytest.raises(PermissionDenied, match="write"):
        reader.merge("m", [("scoped", 1.0)])
    assert [x.id for x in reader.list()] == [a.id]


def test_tenants_never_see_each_others_adapters(
    clients: Clients, lora_base_spec: BaseModelSpec
) -> None:
    acme, globex = clients.adapters("acme"), clients.adapters("globex")
    a = acme.register_files("private", files_of(random_adapter(lora_base_spec, seed=5))).adapter
    memory = clients.memos("acme").put("Only acme may learn from this.")
    assert globex.list(all_versions=True) == []
    with pytest.raises(NotFound):
        globex.get("private")
    with pytest.raises(NotFound):
        globex.get_by_id(a.id)
    with pytest.raises(NotFound):
        globex.merge("stolen", [("private", 1.0)])
    with pytest.raises(NotFound):
        globex.delete("private")
    with pytest.raises(NotFound):
        globex.request("private")
    with pytest.raises(NotFound):
        globex.train("learned", [memory.id], steps=1).wait()
    with pytest.raises(NotFound):
        clients.memos("globex").get(a.id)
    # The same name in another tenant is another adapter; the content is shared on disk.
    b = globex.register_files("private", files_of(random_adapter(lora_base_spec, seed=5))).adapter
    assert b.id != a.id and b.digest == a.digest and b.tenant == "globex"
    assert globex.delete("private")[0].id == b.id
    assert acme.get("private") == a and Path(a.path).exists()


# --------------------------------------------------------------------------- invalid uploads


def _valid(spec: BaseModelSpec) -> dict[str, bytes]:
    return files_of(random_adapter(spec, seed=6))


def _wrong_shape(spec: BaseModelSpec) -> dict[str, bytes]:
    adapter = random_adapter(spec, seed=6)
    tensors = adapter.tensors()
    tensors[factor_key(Q0, "A")] = torch.zeros(4, 65)
    return {CONFIG_FILE: adapter.config_bytes(), WEIGHTS_FILE: save(tensors)}


def _unknown_module(spec: BaseModelSpec) -> dict[str, bytes]:
    adapter = random_adapter(spec, seed=6)
    tensors = adapter.tensors()
    tensors[factor_key("model.layers.9.self_attn.q_proj", "A")] = torch.zeros(4, 64)
    tensors[factor_key("model.layers.9.self_attn.q_proj", "B")] = torch.zeros(64, 4)
    return {CONFIG_FILE: adapter.config_bytes(), WEIGHTS_FILE: save(tensors)}


def _unknown_target(spec: BaseModelSpec) -> dict[str, bytes]:
    adapter = random_adapter(spec, seed=6)
    config = {**adapter.config, "target_modules": ["q_proj", "v_proj", "c_attn"]}
    return {CONFIG_FILE: canonical_json(config), WEIGHTS_FILE: adapter.weights_bytes()}


def _bad_safetensors(spec: BaseModelSpec) -> dict[str, bytes]:
    return {**_valid(spec), WEIGHTS_FILE: b"this is not a safetensors file at all"}


def _truncated(spec: BaseModelSpec) -> dict[str, bytes]:
    files = _valid(spec)
    return {**files, WEIGHTS_FILE: files[WEIGHTS_FILE][:-10]}


def _config_only(spec: BaseModelSpec) -> dict[str, bytes]:
    return {CONFIG_FILE: _valid(spec)[CONFIG_FILE]}


INVALID: dict[str, tuple[str, Callable[[BaseModelSpec], dict[str, bytes]], str]] = {
    # case: (adapter name, files, a fragment of the message)
    "wrong shapes": ("ok-name", _wrong_shape, "lora_A has shape [4, 65]"),
    "unknown module": ("ok-name", _unknown_module, "unknown module"),
    "unknown target": ("ok-name", _unknown_target, "'c_attn' does not exist"),
    "bad safetensors": ("ok-name", _bad_safetensors, "safetensors"),
    "truncated safetensors": ("ok-name", _truncated, "safetensors"),
    "missing file": ("ok-name", _config_only, "lacks adapter_model.safetensors"),
    "traversal in the name": ("../escape", _valid, "path traversal"),
    "separator in the name": ("a/b", _valid, "path separator"),
    "absolute name": ("/etc/passwd", _valid, "absolute path"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_adapters_are_rejected_and_nothing_is_stored(
    clients: Clients, lora_base_spec: BaseModelSpec, case: str
) -> None:
    name, build, fragment = INVALID[case]
    before = store_tree(clients.handle)
    with pytest.raises(InvalidArgument, match=fragment.replace("[", r"\[")):
        clients.adapters().register_files(name, build(lora_base_spec), chunk_bytes=4096)
    assert store_tree(clients.handle) == before
    assert list(clients.memos().list(kind="parameter")) == []
    assert clients.adapters().list(all_versions=True) == []


def _raw_register(handle: ServerHandle, messages: list[pb.RegisterRequest]) -> grpc.RpcError:
    stub = pb_grpc.AdapterServiceStub(handle.channel())  # type: ignore[no-untyped-call]
    meta = [("authorization", f"Bearer {handle.tokens['acme']}")]
    with pytest.raises(grpc.RpcError) as info:
        stub.Register(iter(messages), metadata=meta, timeout=30)
    return info.value


def test_malformed_register_streams_are_rejected(
    clients: Clients, lora_base_spec: BaseModelSpec
) -> None:
    handle = clients.handle
    files = _valid(lora_base_spec)
    header = pb.RegisterRequest(header=pb.RegisterHeader(name="raw"))

    def chunk(file: str, data: bytes) -> pb.RegisterRequest:
        return pb.RegisterRequest(chunk=pb.FileChunk(file=file, data=data))

    before = store_tree(handle)
    cases: dict[str, tuple[list[pb.RegisterRequest], str]] = {
        "no header": ([chunk(CONFIG_FILE, files[CONFIG_FILE])], "starts with its header"),
        "empty stream": ([], "starts with its header"),
        "two headers": ([header, header], "only file chunks"),
        "traversal in a file name": (
            [header, chunk("../adapter_model.safetensors", files[WEIGHTS_FILE])],
            "path traversal",
        ),
        "a third file": ([header, chunk("model.py", b"import os")], "unexpected file"),
    }
    for case, (messages, fragment) in cases.items():
        error = _raw_register(handle, messages)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, case
        assert fragment in (error.details() or ""), (case, error.details())
    assert store_tree(handle) == before


def test_bad_metadata_is_rejected_before_anything_is_stored(
    clients: Clients, lora_base_spec: BaseModelSpec
) -> None:
    before = store_tree(clients.handle)
    with pytest.raises(InvalidArgument, match="written by the daemon"):
        clients.adapters().register_files(
            "meta", _valid(lora_base_spec), metadata={"adapter.name": "spoof"}
        )
    assert store_tree(clients.handle) == before


# ----------------------------------------------------------------------- the two writes


def test_when_the_cube_cannot_be_written_the_new_adapter_is_removed(
    clients: Clients, lora_base_spec: BaseModelSpec
) -> None:
    handle = clients.handle
    adapters = clients.adapters()
    kept = adapters.register_files("kept", files_of(random_adapter(lora_base_spec, seed=7)))
    before = store_tree(handle)
    # The cube-record store goes away under the daemon (a real failure of the second write).
    handle.server.kernel().plaintext.close()
    with pytest.raises(MemosError):
        adapters.register_files("orphan", files_of(random_adapter(lora_base_spec, seed=8)))
    assert store_tree(handle) == before
    assert [a.id for a in adapters.list(all_versions=True)] == [kept.adapter.id]


# ------------------------------------------------------------------------------ no model


@pytest.mark.parametrize(
    "call",
    [
        lambda a: a.list(),
        lambda a: a.get("x"),
        lambda a: a.register_files("x", {CONFIG_FILE: b"{}"}),
        lambda a: a.delete("x"),
        lambda a: a.merge("x", [("y", 1.0)]),
        lambda a: a.request("x"),
        lambda a: a.train("x", ["01JDZ8Q3V2X7G4M5N6P7R8S9T0"]).wait(),
    ],
    ids=["list", "get", "register", "delete", "merge", "request", "train"],
)
def test_without_a_base_model_every_call_says_how_to_configure_one(
    server: ServerHandle, call: Callable[..., object]
) -> None:
    c = Clients(server)
    try:
        with pytest.raises(FailedPrecondition, match=r"engine\.model_path"):
            call(c.adapters())
    finally:
        c.close()


# --------------------------------------------------------------------------- engine slots


@pytest.fixture
def three(clients: Clients, lora_base_spec: BaseModelSpec) -> Iterator[list[str]]:
    adapters = clients.adapters()
    ids = [
        adapters.register_files(n, files_of(random_adapter(lora_base_spec, seed=10 + i))).adapter.id
        for i, n in enumerate(("a", "b", "c"))
    ]
    yield ids


def test_page_requests_answer_what_the_engine_loads_and_unloads(
    clients: Clients, three: list[str]
) -> None:
    adapters = clients.adapters()
    a_id, b_id, c_id = three
    first = adapters.request("a")
    assert not first.hit and first.load and first.unload == () and first.key == a_id
    assert first.adapter.path and first.adapter.ref == "a@v1"
    again = adapters.request("a", hint=0)
    assert again.hit and not again.load and again.unload == ()
    assert adapters.request("b").load
    # Two slots: c takes the place of one of the two loaded adapters.
    c = adapters.request("c", hint=1)
    assert c.load and c.key == c_id and len(c.unload) == 1 and c.unload[0] in (a_id, b_id)
    # Deleting a loaded adapter frees its slot: the next decision has the engine unload it.
    adapters.delete("c")
    survivor = b_id if c.unload[0] == a_id else a_id
    name = "a" if survivor == a_id else "b"
    after = adapters.request(name)
    assert after.hit and after.unload == (c_id,)
    assert adapters.request(name).unload == ()
    with pytest.raises(InvalidArgument, match="hint bit"):
        adapters.request(name, hint=2)
    assert adapters_of(clients.handle).slots.stats.requests == 6
