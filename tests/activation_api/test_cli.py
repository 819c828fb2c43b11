"""memosctl migrate and memosctl kv against a real daemon with the tiny model."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner, Result

from memos.cli.app import app
from memos.cli.exits import EXIT_CODES
from memos.client import MemosClient
from tests.activation_api.conftest import StartKv
from tests.fixtures.daemon import ServerHandle

runner = CliRunner(env={"MEMOS_ADDR": None, "MEMOS_TOKEN": None, "MEMOS_TENANT": None})

TEXT = "Backups run at two in the morning and are kept for thirty days, then pruned. " * 2


def run(handle: ServerHandle, *args: str, who: str = "acme") -> Result:
    return runner.invoke(app, [*args, "--addr", handle.addr, "--token", handle.tokens[who]])


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_migrate_to_activation_and_back(kv_server: ServerHandle) -> None:
    with MemosClient(kv_server.addr, token=kv_server.tokens["acme"]) as client:
        plain = client.put(TEXT)
    cube = ok_json(run(kv_server, "migrate", plain.id, "--to", "activation", "--json"))
    assert cube["kind"] == "activation" and cube["parent_ids"] == [plain.id]
    assert cube["state"] == "active" and cube["tenant"] == "acme"
    payload = cube["activation"]
    assert payload["chunk_tokens"] == 16 and len(payload["chunk_keys"]) == len(TEXT) // 16
    assert payload["cache_salt"] == "memos-tenant:acme"
    assert cube["migration"]["created"] is True
    assert cube["migration"]["prefilled_chunks"] == len(payload["chunk_keys"])

    again = ok_json(run(kv_server, "migrate", plain.id, "--to", "activation", "--json"))
    assert again["id"] == cube["id"] and again["migration"]["prefilled_chunks"] == 0

    stats = ok_json(run(kv_server, "kv", "stats", "--json"))
    assert stats["stored_chunks"] == len(payload["chunk_keys"])
    assert stats["model_fingerprint"] == payload["model_fingerprint"]

    human = run(kv_server, "kv", "stats")
    assert human.exit_code == 0 and "ram (ram)" in human.stdout and "disk (disk)" in human.stdout

    back = ok_json(run(kv_server, "migrate", cube["id"], "--to", "plaintext", "--json"))
    assert back["id"] == plain.id and back["text"] == TEXT
    assert back["migration"]["archived"] == [cube["id"]]


def test_migrate_without_a_model_says_how_to_configure_one(start_kv: StartKv) -> None:
    handle = start_kv(model=False)
    with MemosClient(handle.addr, token=handle.tokens["acme"]) as client:
        plain = client.put(TEXT)
    result = run(handle, "migrate", plain.id, "--to", "activation")
    assert result.exit_code == EXIT_CODES["FAILED_PRECONDITION"]
    assert "engine.model_path" in result.stderr and "MEMOS_ENGINE__MODEL_PATH" in result.stderr
    assert result.stdout == ""
