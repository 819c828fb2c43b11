"""Content-addressed, versioned storage: one blob per content, nothing partial, no overwrite."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from memos.errors import InvalidArgument, NotFound
from memos.ids import new_id
from memos.tiers.parameter.fingerprint import BaseModelSpec
from memos.tiers.parameter.names import CONFIG_FILE, WEIGHTS_FILE
from memos.tiers.parameter.store import AdapterStore
from memos.tiers.parameter.weights import LoraModule, LoraWeights, canonical_json
from tests.fixtures.adapters import random_adapter, write_adapter

T = "acme"


def _bumped(adapter: LoraWeights) -> LoraWeights:
    """The same adapter with one weight changed."""
    modules = dict(adapter.modules)
    name = sorted(modules)[0]
    b = modules[name].b.clone()
    b[0, 0] += 1.0
    modules[name] = LoraModule(modules[name].a, b, modules[name].scale)
    return LoraWeights(adapter.config, modules)


def _nothing_stored(store: AdapterStore) -> bool:
    return (
        store.blobs() == []
        and list((store.root / "tmp").iterdir()) == []
        and list((store.root / "index").rglob("*.json")) == []
    )


def test_register_from_a_path_stores_a_content_addressed_read_only_blob(
    tmp_path: Path, adapter_store: AdapterStore, lora_base_spec: BaseModelSpec
) -> None:
    adapter = random_adapter(lora_base_spec, rank=4)
    record = adapter_store.register_path(T, "support", write_adapter(tmp_path / "a", adapter))
    config = canonical_json(adapter.config)
    weights = adapter.weights_bytes()
    digest = hashlib.sha256(
        b"memos-lora/1\x00" + hashlib.sha256(config).digest() + hashlib.sha256(weights).digest()
    ).hexdigest()
    assert record.digest == digest and record.version == 1 and record.ref == "support@v1"
    assert Path(record.path) == adapter_store.root / "sha256" / digest
    assert (Path(record.path) / WEIGHTS_FILE).read_bytes() == weights
    assert (Path(record.path) / CONFIG_FILE).read_bytes() == config
    assert (Path(record.path) / WEIGHTS_FILE).stat().st_mode & 0o222 == 0
    assert (record.rank, record.modules, record.target_modules) == (4, 4, ("q_proj", "v_proj"))
    assert record.base_model == lora_base_spec.model_id and record.origin == "upload"
    payload = record.payload()
    assert payload.weights_sha256 == digest and payload.uri == record.path and payload.rank == 4
    assert adapter_store.get(T, "support") == record
    assert adapter_store.get_by_id(T, record.id) == record
    loaded = adapter_store.load(record)
    for name, module in adapter.modules.items():
        assert torch.equal(loaded.modules[name].a, module.a)


def test_the_same_content_twice_is_one_blob(
    adapter_store: AdapterStore, lora_base_spec: BaseModelSpec
) -> None:
    adapter = random_adapter(lora_base_spec)
    files = {CONFIG_FILE: adapter.config_bytes(), WEIGHTS_FILE: adapter.weights_bytes()}
    first = adapter_store.register_files(T, "one", files)
    again = adapter_store.register_files(T, "one", files)
    other = adapter_store.register_files(T, "two", files)
    elsewhere = adapter_store.register_files("other-tenant", "one", files)
    assert again == first
    assert other.digest == first.digest and other.path == first.path and other.id != first.id
    assert elsewhere.path == first.path
    assert adapter_store.blobs() == [first.digest]
    assert [r.name for r in adapter_store.list_adapters(T)] == ["one", "two"]


def test_a_config_that_differs_only_in_formatting_is_the_same_content(
    adapter_store: AdapterStore, lora_base_spec: BaseModelSpec
) -> None:
    adapter = random_adapter(lora_base_spec)
    import json

    pretty = json.dumps(dict(adapter.config), indent=4).encode()
    a = adapter_store.register_files(
        T, "a", {CONFIG_FILE: adapter.config_bytes(), WEIGHTS_FILE: adapter.weights_bytes()}
    )
    b = adapter_store.register_files(
        T, "b", {CONFIG_FILE: pretty, WEIGHTS_FILE: adapter.weights_bytes()}
    )
    assert a.digest == b.digest


def test_a_changed_weight_is_a_new_version_at_a_new_path(
    adapter_store: AdapterStore, lora_base_spec: BaseModelSpec
) -> None:
    v1_weights = random_adapter(lora_base_spec)
    v1 = adapter_store.register_weights(T, "bot", v1_weights, origin="upload")
    v1_bytes = (Path(v1.path) / WEIGHTS_FILE).read_bytes()
    v2 = adapter_store.register_weights(T, "bot", _bumped(v1_weights), origin="upload")
    assert (v1.version, v2.version) == (1, 2)
    assert v2.digest != v1.digest and v2.path != v1.path and v2.id != v1.id
    assert (Path(v1.path) / WEIGHTS_FILE).read_bytes() == v1_bytes  # never overwritten
    assert adapter_store.get(T, "bot") == v2
    assert adapter_store.get(T, "bot", 1) == v1
    assert adapter_store.list_adapters(T) == [v2]
    assert adapter_store.list_adapters(T, all_versions=True) == [v1, v2]
    # Going back to the first weights is a third version sharing the first blob.
    v3 = adapter_store.register_weights(T, "bot", v1_weights, origin="upload")
    assert v3.version == 3 and v3.path == v1.path
    assert len(adapter_store.blobs()) == 2


def test_a_streamed_upload_equals_a_path_registration(
    tmp_path: Path, adapter_store: AdapterStore, lora_base_spec: BaseModelSpec
) -> None:
    adapter = random_adapter(lora_base_spec)
    weights = adapter.weights_bytes()
    with adapter_store.upload(T, "streamed") as up:
        up.write(CONFIG_FILE, adapter.config_bytes())
        for i in range(0, len(weights), 1000):
            up.write(WEIGHTS_FILE, weights[i : i + 1000])
        streamed = up.commit()
    by_path = adapter_store.register_path(T, "by-path", write_adapter(tmp_path / "a", adapter))
    assert streamed.digest == by_path.digest
    assert list((adapter_store.root / "tmp").iterdir()) == []


def _rejections(spec: BaseModelSpec) -> dict[str, tuple[str, dict[str, bytes], str]]:
    good = random_adapter(spec)
    config, weights = good.config_bytes(), good.weights_bytes()
    wrong_shape = random_adapter(spec)
    module = sorted(wrong_shape.modules)[0]
    bad = dict(wrong_shape.modules)
    bad[module] = LoraModule(torch.zeros(4, 63), bad[module].b, 1.0)
    unknown = dict(good.modules)
    unknown["model.layers.5.self_attn.q_proj"] = good.modules[module]
    return {
        "wrong shapes": (
            "x",
            {CONFIG_FILE: config, WEIGHTS_FILE: LoraWeights(good.config, bad).weights_bytes()},
            "lora_A has shape",
        ),
        "unknown module": (
            "x",
            {CONFIG_FILE: config, WEIGHTS_FILE: LoraWeights(good.config, unknown).weights_bytes()},
            "unknown module",
        ),
        "bad safetensors": (
            "x",
            {CONFIG_FILE: config, WEIGHTS_FILE: b"\x08" + bytes(20)},
            "bad safetensors",
        ),
        "missing config": ("x", {WEIGHTS_FILE: weights}, "lacks adapter_config.json"),
        "traversal in the name": ("../escape", {CONFIG_FILE: config, WEIGHTS_FILE: weights}, ".."),
        "absolute name": ("/tmp/x", {CONFIG_FILE: config, WEIGHTS_FILE: weights}, "absolute"),
        "traversal in a file name": (
            "x",
            {CONFIG_FILE: config, f"../{WEIGHTS_FILE}": weights},
            "'..'",
        ),
        "unexpected file": (
            "x",
            {CONFIG_FILE: config, WEIGHTS_FILE: weights, "run.py": b"print(1)"},
            "unexpected file",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong shapes",
        "unknown module",
        "bad safetensors",
        "missing config",
        "traversal in the name",
        "absolute name",
        "traversal in a file name",
        "unexpected file",
    ],
)
def test_a_rejected_adapter_leaves_nothing_stored(
    case: str, adapter_store: AdapterStore, lora_base_spec: BaseModelSpec
) -> None:
    name, files, message = _rejections(lora_base_spec)[case]
    with pytest.raises(InvalidArgument, match=message):
        adapter_store.register_files(T, name, files)
    assert _nothing_stored(adapter_store)
    assert not (adapter_store.root.parent / "escape").exists()


def test_an_oversized_upload_is_cut_off(tmp_path: Path, lora_base_spec: BaseModelSpec) -> None:
    from memos.tiers.parameter.validate import AdapterLimits

    store = AdapterStore(tmp_path / "s", lora_base_spec, AdapterLimits(max_weights_bytes=4096))
    with pytest.raises(InvalidArgument, match="exceeds its limit"), store.upload(T, "big") as up:
        up.write(WEIGHTS_FILE, bytes(3000))
        up.write(WEIGHTS_FILE, bytes(3000))
    assert _nothing_stored(store)


def test_delete_drops_versions_and_only_unreferenced_blobs(
    adapter_store: AdapterStore, lora_base_spec: BaseModelSpec
) -> None:
    base = random_adapter(lora_base_spec)
    v1 = adapter_store.register_weights(T, "bot", base, origin="upload")
    v2 = adapter_store.register_weights(T, "bot", _bumped(base), origin="upload")
    twin = adapter_store.register_weights(T, "twin", base, origin="upload")
    assert adapter_store.delete(T, "bot", 1) == [v1]
    assert Path(v1.path).exists()  # "twin" still holds that content
    assert adapter_store.get(T, "bot") == v2
    with pytest.raises(NotFound, match="no version 1"):
        adapter_store.get(T, "bot", 1)
    assert adapter_store.delete(T, "bot") == [v2]
    assert not Path(v2.path).exists()
    with pytest.raises(NotFound, match="no adapter 'bot'"):
        adapter_store.get(T, "bot")
    adapter_store.delete(T, "twin")
    assert not Path(twin.path).exists() and adapter_store.blobs() == []


def test_a_corrupted_blob_is_detected_on_load(
    adapter_store: AdapterStore, lora_base_spec: BaseModelSpec
) -> None:
    record = adapter_store.register_weights(
        T, "bot", random_adapter(lora_base_spec), origin="upload"
    )
    path = Path(record.path) / WEIGHTS_FILE
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidArgument, match="corrupted on disk"):
        adapter_store.load(record)


def test_records_survive_a_new_store_instance(
    adapter_store: AdapterStore, lora_base_spec: BaseModelSpec
) -> None:
    parent = new_id()
    record = adapter_store.register_weights(
        T,
        "bot",
        random_adapter(lora_base_spec),
        origin="train",
        parents=[parent],
        metadata={"why": "test"},
    )
    reopened = AdapterStore(adapter_store.root, lora_base_spec)
    assert reopened.get(T, "bot") == record
    assert record.parents == (parent,) and record.metadata == {"why": "test"}


def test_parents_must_be_cube_ids(
    adapter_store: AdapterStore, lora_base_spec: BaseModelSpec
) -> None:
    with pytest.raises(InvalidArgument, match="not a cube id"):
        adapter_store.register_weights(
            T, "bot", random_adapter(lora_base_spec), origin="merge", parents=["../x"]
        )
    assert _nothing_stored(adapter_store)


def test_abandoned_uploads_are_swept_when_a_store_opens(
    adapter_store: AdapterStore, lora_base_spec: BaseModelSpec
) -> None:
    import os

    up = adapter_store.upload(T, "abandoned")
    up.write(CONFIG_FILE, b"{}")
    fresh = adapter_store.upload(T, "in-flight")
    os.utime(up.dir, (0, 0))
    AdapterStore(adapter_store.root, lora_base_spec)
    assert not up.dir.exists() and fresh.dir.exists()
    fresh.abort()
