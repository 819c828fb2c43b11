"""``memosctl adapters`` against a real daemon, through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from memos.cli.adapters import parse_source
from memos.cli.app import app
from memos.cli.exits import EXIT_CODES
from memos.client_adapters import MergeInput
from memos.tiers.parameter.fingerprint import BaseModelSpec
from tests.adapter_api.helpers import store_tree
from tests.fixtures.adapters import random_adapter, write_adapter
from tests.fixtures.daemon import ServerHandle

runner = CliRunner(env={"MEMOS_ADDR": None, "MEMOS_TOKEN": None, "MEMOS_TENANT": None})


def run(handle: ServerHandle, *args: str, who: str = "acme") -> Result:
    return runner.invoke(app, [*args, "--addr", handle.addr, "--token", handle.tokens[who]])


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_register_ls_get_merge_train_rm(
    adapter_server: ServerHandle, lora_base_spec: BaseModelSpec, tmp_path: Path, one_thread: None
) -> None:
    h = adapter_server
    a_dir = write_adapter(tmp_path / "a", random_adapter(lora_base_spec, seed=1))
    b_dir = write_adapter(tmp_path / "b", random_adapter(lora_base_spec, seed=2))
    a = ok_json(run(h, "adapters", "register", str(a_dir), "--name", "a", "--json"))
    assert a["created"] and a["adapter"]["ref"] == "a@v1"
    plain = run(h, "adapters", "register", str(b_dir), "--name", "b", "-m", "team=ops")
    assert plain.exit_code == 0 and "registered b@v1" in plain.stdout

    listed = ok_json(run(h, "adapters", "ls", "--json"))
    assert [x["name"] for x in listed["adapters"]] == ["a", "b"]
    table = run(h, "adapters", "ls")
    assert table.exit_code == 0 and "a" in table.stdout and a["adapter"]["id"] in table.stdout
    got = ok_json(run(h, "adapters", "get", "b", "--json"))
    assert got["metadata"] == {"team": "ops"} and got["version"] == 1
    assert "digest" in run(h, "adapters", "get", "b").stdout

    merged = ok_json(run(h, "adapters", "merge", "ab", "a=0.25", "b@v1=0.75", "--json"))
    assert merged["rank"] == 8 and merged["adapter"]["parent_ids"] == [
        a["adapter"]["id"],
        got["id"],
    ]

    memory = ok_json(run(h, "put", "The coffee machine is descaled on Fridays.", "--json"))
    trained = ok_json(run(h, "adapters", "train", "coffee", memory["id"], "--steps", "3", "--json"))
    assert len(trained["losses"]) == 3 and trained["adapter"]["parent_ids"] == [memory["id"]]

    # The adapters are cubes: `memosctl ls --kind parameter` lists them.
    cubes = ok_json(run(h, "ls", "--kind", "parameter", "--json"))
    assert len(cubes["cubes"]) == 4
    assert {c["metadata"]["adapter.name"] for c in cubes["cubes"]} == {"a", "b", "ab", "coffee"}

    deleted = ok_json(run(h, "adapters", "rm", "ab", "--json"))
    assert [d["ref"] for d in deleted["deleted"]] == ["ab@v1"]
    assert len(ok_json(run(h, "ls", "--kind", "parameter", "--json"))["cubes"]) == 3


def test_errors_exit_with_their_codes(
    adapter_server: ServerHandle, lora_base_spec: BaseModelSpec, tmp_path: Path
) -> None:
    h = adapter_server
    missing = run(h, "adapters", "get", "nope")
    assert missing.exit_code == EXIT_CODES["NOT_FOUND"] and "no adapter" in missing.stderr
    folder = write_adapter(tmp_path / "x", random_adapter(lora_base_spec, seed=3))
    before = store_tree(h)
    bad = run(h, "adapters", "register", str(folder), "--name", "../x")
    assert bad.exit_code == EXIT_CODES["INVALID_ARGUMENT"] and "traversal" in bad.stderr
    denied = run(h, "adapters", "register", str(folder), "--name", "x", "--server-path")
    assert denied.exit_code == EXIT_CODES["PERMISSION_DENIED"]
    assert store_tree(h) == before
    usage = run(h, "adapters", "merge", "m", "a=heavy")
    assert usage.exit_code == 2


def test_merge_sources_parse() -> None:
    assert parse_source("a") == MergeInput(name="a")
    assert parse_source("b@v3=0.5") == MergeInput(name="b", version=3, weight=0.5)
    assert parse_source("c.d=-1e-1") == MergeInput(name="c.d", weight=-0.1)
    for bad in ("=1", "a=b=c", "x=heavy"):
        with pytest.raises(typer.BadParameter):
            parse_source(bad)
