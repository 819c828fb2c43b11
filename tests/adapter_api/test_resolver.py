"""AdapterService.Download and the vLLM LoRA resolver's logic (no vLLM needed): adapter
names resolved through a real daemon, materialised once per content in a local cache.

The resolver inside a real vLLM server runs in tests/vllm/test_lora.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from memos.client_adapters import AdapterInfo
from memos.errors import InvalidArgument, NotFound
from memos.integrations.vllm.lora_resolver import (
    AdapterResolver,
    ResolverError,
    ResolverSettings,
    parse_lora_name,
)
from memos.tiers.parameter.fingerprint import BaseModelSpec
from memos.tiers.parameter.names import CONFIG_FILE, WEIGHTS_FILE
from tests.adapter_api.conftest import Clients
from tests.adapter_api.helpers import files_of
from tests.fixtures.adapters import random_adapter
from tests.fixtures.daemon import free_port


def resolver(clients: Clients, cache: Path, **settings: object) -> AdapterResolver:
    handle = clients.handle
    return AdapterResolver(
        ResolverSettings.model_validate(
            {"daemon": handle.addr, "token": handle.tokens["acme"], "cache_dir": cache, **settings}
        )
    )


def test_download_sends_the_stored_files(clients: Clients, lora_base_spec: BaseModelSpec) -> None:
    adapters = clients.adapters()
    files = files_of(random_adapter(lora_base_spec, seed=1))
    reg = adapters.register_files("dl", files).adapter
    info, got = adapters.download(name="dl")
    assert info == reg
    stored = Path(reg.path)
    assert got == {f: (stored / f).read_bytes() for f in (CONFIG_FILE, WEIGHTS_FILE)}
    assert adapters.download(adapter_id=reg.id)[1] == got
    with pytest.raises(NotFound, match="no adapter 'nope'"):
        adapters.download(name="nope")
    with pytest.raises(InvalidArgument, match="not both"):
        adapters.download(name="dl", adapter_id=reg.id)
    # Another tenant does not see it.
    with pytest.raises(NotFound):
        clients.adapters("globex").download(adapter_id=reg.id)


def test_names_the_resolver_answers() -> None:
    assert parse_lora_name("tone") == ("tone", 0)
    assert parse_lora_name("tone@v3") == ("tone", 3)
    assert parse_lora_name("my.adapter-1@v12") == ("my.adapter-1", 12)
    # Version ids are the daemon's own engine keys: never resolved.
    assert parse_lora_name("01JDQ8Z6V5W0E8X3N4M2K1H0GF") is None
    for bad in ("../etc", "a/b", "", "tone@v0", "x" * 200):
        assert parse_lora_name(bad) is None, bad


def test_a_name_is_resolved_once_per_content_into_the_cache(
    clients: Clients, lora_base_spec: BaseModelSpec, tmp_path: Path
) -> None:
    adapters = clients.adapters()
    v1 = adapters.register_files("tone", files_of(random_adapter(lora_base_spec, seed=1))).adapter
    v2 = adapters.register_files("tone", files_of(random_adapter(lora_base_spec, seed=2))).adapter
    res = resolver(clients, tmp_path / "cache")

    latest = res.resolve("tone")
    assert latest is not None and latest.adapter.id == v2.id and latest.int_id > 0
    assert latest.path == tmp_path / "cache" / "sha256" / v2.digest
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        assert (latest.path / name).read_bytes() == (Path(v2.path) / name).read_bytes()
        assert (latest.path / name).stat().st_mode & 0o222 == 0  # read-only
    first = res.resolve("tone@v1")
    assert first is not None and first.adapter.id == v1.id
    assert first.path.name == v1.digest

    # Resolved again (another name, a restart): the same directory, not rewritten.
    stamp = (latest.path / WEIGHTS_FILE).stat().st_mtime_ns
    again = resolver(clients, tmp_path / "cache").resolve("tone@v2")
    assert again is not None and again.path == latest.path
    assert (latest.path / WEIGHTS_FILE).stat().st_mtime_ns == stamp
    assert not list((tmp_path / "cache" / "tmp").iterdir())

    assert res.resolve("unknown") is None
    assert res.resolve("tone@v9") is None
    assert res.resolve(v1.id) is None  # ids stay the daemon's to load
    res.close()


def test_content_that_fails_its_checks_is_never_written(
    clients: Clients, lora_base_spec: BaseModelSpec, tmp_path: Path
) -> None:
    adapters = clients.adapters()
    adapters.register_files("checked", files_of(random_adapter(lora_base_spec, seed=3)))
    info, files = adapters.download(name="checked")
    res = resolver(clients, tmp_path / "cache")
    tampered = {**files, WEIGHTS_FILE: files[WEIGHTS_FILE][:-4] + b"\x00\x00\x00\x00"}
    with pytest.raises(InvalidArgument, match="corrupted in transit"):
        res.materialise(info, tampered)
    with pytest.raises(InvalidArgument, match="the daemon sent"):
        res.materialise(info, {CONFIG_FILE: files[CONFIG_FILE]})
    fake: AdapterInfo = info.model_copy(update={"digest": "../../etc"})
    with pytest.raises(InvalidArgument, match="not a sha256 digest"):
        res.materialise(fake, files)
    assert not (tmp_path / "cache" / "sha256").exists()

    other_model = resolver(clients, tmp_path / "cache", base_model="hf:another-model")
    with pytest.raises(InvalidArgument, match="validated against base model"):
        other_model.materialise(info, files)
    assert other_model.resolve("checked") is None
    with pytest.raises(ResolverError, match=r"this engine cannot serve it: .*base model") as err:
        other_model.resolve("checked", raise_errors=True)
    assert err.value.status == 422
    assert other_model.resolve("unknown", raise_errors=True) is None  # vLLM's own 404

    # A damaged cached copy is replaced whole, never served.
    good = res.materialise(info, files)
    (good / WEIGHTS_FILE).chmod(0o644)
    (good / WEIGHTS_FILE).write_bytes(b"garbage")
    again = res.materialise(info, files)
    assert again == good and (good / WEIGHTS_FILE).read_bytes() == files[WEIGHTS_FILE]
    res.close()


def test_a_daemon_out_of_reach_resolves_nothing_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    addr = f"127.0.0.1:{free_port()}"
    settings = ResolverSettings(daemon=addr, cache_dir=tmp_path, timeout_s=5)
    res = AdapterResolver(settings)
    with caplog.at_level(logging.ERROR, logger="memos.integrations.vllm.lora_resolver"):
        assert res.resolve("tone") is None
    assert f"through memosd at {addr}" in caplog.text
    with pytest.raises(ResolverError, match="MEMOS_VLLM_RESOLVER_DAEMON") as err:
        res.resolve("tone", raise_errors=True)
    assert err.value.status == 503 and f"memosd at {addr} did not answer" in err.value.message
    res.close()


def test_settings_come_from_the_vllm_process_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    monkeypatch.setenv("MEMOS_VLLM_RESOLVER_DAEMON", "memosd:50051")
    monkeypatch.setenv("MEMOS_VLLM_RESOLVER_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("MEMOS_VLLM_RESOLVER_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("MEMOS_VLLM_RESOLVER_ENABLED", "false")
    settings = ResolverSettings.from_env()
    assert settings.daemon == "memosd:50051"
    assert settings.bearer_token() == "s3cret"
    assert settings.cache_root == tmp_path / "c"
    assert not settings.enabled


def test_a_misspelt_setting_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_VLLM_RESOLVER_DEAMON", "memosd:50051")
    with pytest.raises(ValidationError, match="deamon"):
        ResolverSettings.from_env()
