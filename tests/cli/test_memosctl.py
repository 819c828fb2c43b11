"""memosctl against a real gRPC server on localhost, through Typer's CliRunner."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from typer.testing import CliRunner, Result

from memos.cli.app import app
from memos.cli.exits import EXIT_CODES
from memos.client import MemosClient
from tests.fixtures.daemon import ServerHandle, free_port

# The tests name the daemon with flags: no MEMOS_* variable of the caller may leak in.
runner = CliRunner(env={"MEMOS_ADDR": None, "MEMOS_TOKEN": None, "MEMOS_TENANT": None})


def run(
    handle: ServerHandle, *args: str, who: str | None = "acme", stdin: str | None = None
) -> Result:
    conn = ["--addr", handle.addr]
    if who is not None and handle.tokens:
        conn += ["--token", handle.tokens[who]]
    return runner.invoke(app, [*args, *conn], input=stdin)


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)  # exactly one document: json.loads refuses any more


def assert_fails(result: Result, code: int, *fragments: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("memosctl: error")
    for fragment in fragments:
        assert fragment in line
    return line


def test_json_outputs_have_the_promised_keys(server: ServerHandle) -> None:
    put = ok_json(
        run(server, "put", "The deploy key rotates every Monday", "--tags", "ops,keys", "--json")
    )
    assert put["id"] and put["text"] == "The deploy key rotates every Monday"
    assert put["tags"] == ["ops", "keys"] and put["version"] == 1 and put["tenant"] == "acme"
    ok_json(run(server, "put", "Alice is allergic to peanuts", "-n", "people", "--json"))

    got = ok_json(run(server, "get", put["id"], "--json"))
    assert got["id"] == put["id"] and got["text"] == put["text"]
    assert got["plaintext"]["embedding"] is None
    with_vector = ok_json(run(server, "get", put["id"], "--embedding", "--json"))
    assert len(with_vector["plaintext"]["embedding"]) > 0

    found = ok_json(run(server, "search", "when do we rotate keys?", "--json"))
    assert set(found) == {"results"}
    first = found["results"][0]
    assert {"id", "score", "text", "namespace", "tags"} <= set(first)
    assert first["id"] == put["id"] and isinstance(first["score"], float)
    people = ok_json(run(server, "search", "food allergy", "-n", "people", "--json"))
    assert [r["text"] for r in people["results"]] == ["Alice is allergic to peanuts"]

    page = ok_json(run(server, "ls", "--page-size", "1", "--json"))
    assert set(page) == {"cubes", "next_page_token"}
    assert len(page["cubes"]) == 1 and page["next_page_token"]
    rest = ok_json(run(server, "ls", "--page-token", page["next_page_token"], "--json"))
    assert len(rest["cubes"]) == 1 and rest["next_page_token"] is None
    everything = ok_json(run(server, "ls", "--page-size", "1", "--all", "--json"))
    assert [c["id"] for c in everything["cubes"]] == [
        page["cubes"][0]["id"],
        rest["cubes"][0]["id"],
    ]

    stats = ok_json(run(server, "stats", "--json"))
    assert stats["cubes"] == 2 and stats["by_namespace"] == {"default": 1, "people": 1}
    health = ok_json(run(server, "health", "--json"))
    assert health == {"addr": server.addr, "status": "SERVING"}


def test_update_history_and_rm(server: ServerHandle) -> None:
    put = ok_json(run(server, "put", "v1 text", "-t", "a", "-t", "b", "-m", "k=v", "--json"))
    cube_id = put["id"]
    v2 = ok_json(
        run(
            server,
            "update",
            cube_id,
            "--add-tag",
            "c",
            "--remove-tag",
            "a",
            "--meta",
            "x=y",
            "--pin",
            "--json",
        )
    )
    assert v2["version"] == 2 and v2["tags"] == ["b", "c"] and v2["pinned"] is True
    assert v2["metadata"] == {"k": "v", "x": "y"}
    v3 = ok_json(
        run(
            server,
            "update",
            cube_id,
            "--text",
            "-",
            "--ttl",
            "1h",
            "--unset-meta",
            "k",
            "--json",
            stdin="v3 text\n",
        )
    )
    assert v3["text"] == "v3 text" and v3["expires_at"] and v3["metadata"] == {"x": "y"}
    stale = run(server, "update", cube_id, "--priority", "1", "--expected-version", "1")
    assert_fails(stale, EXIT_CODES["FAILED_PRECONDITION"], "failed precondition")

    history = ok_json(run(server, "history", cube_id, "--json"))
    assert [v["version"] for v in history["versions"]] == [1, 2, 3]
    assert history["versions"][0]["text"] == "v1 text"

    removed = ok_json(run(server, "rm", cube_id, "--json"))
    assert removed == {"deleted": [{"id": cube_id, "version": 4}]}
    assert_fails(run(server, "get", cube_id), EXIT_CODES["NOT_FOUND"], cube_id)
    nothing = runner.invoke(app, ["update", cube_id, "--addr", server.addr])
    assert nothing.exit_code == 2 and "nothing to update" in nothing.stderr


def test_put_reads_stdin_and_people_get_tables(server: ServerHandle) -> None:
    put = run(server, "put", "-", "--tags", "ops", stdin="The deploy key rotates every Monday\n")
    assert put.exit_code == 0, put.stderr
    assert put.stdout.startswith("stored ") and "ops" in put.stdout
    cube_id = put.stdout.split()[1]
    shown = run(server, "get", cube_id)
    assert shown.exit_code == 0 and "The deploy key rotates every Monday" in shown.stdout
    assert "namespace" in shown.stdout and "default" in shown.stdout
    found = run(server, "search", "when do we rotate keys?")
    assert found.exit_code == 0 and cube_id in found.stdout and "score" in found.stdout
    listed = run(server, "ls")
    assert listed.exit_code == 0 and cube_id in listed.stdout
    for command in (["stats"], ["history", cube_id], ["health"]):
        result = run(server, *command)
        assert result.exit_code == 0 and result.stdout.strip(), command
    empty = run(server, "search", "anything", "-n", "elsewhere")
    assert empty.exit_code == 0 and empty.stdout == "" and "no matching cubes" in empty.stderr


def test_errors_go_to_stderr_with_a_code_per_class(server: ServerHandle) -> None:
    unknown = "01JDZ8Q3V2X7G4M5N6P7R8S9T0"
    assert_fails(run(server, "get", unknown), EXIT_CODES["NOT_FOUND"], "not found", unknown)
    assert_fails(run(server, "get", "nope"), EXIT_CODES["INVALID_ARGUMENT"], "malformed cube id")
    assert_fails(run(server, "put", " "), EXIT_CODES["INVALID_ARGUMENT"], "text is empty")
    assert_fails(run(server, "stats", who=None), EXIT_CODES["UNAUTHENTICATED"], "--token")
    assert_fails(
        runner.invoke(app, ["stats", "--addr", server.addr, "--token", "forged"]),
        EXIT_CODES["UNAUTHENTICATED"],
    )
    assert_fails(run(server, "put", "x", who="reader"), EXIT_CODES["PERMISSION_DENIED"])
    down = f"127.0.0.1:{free_port()}"
    for command in (["put", "x", "--json"], ["health"], ["tail"]):
        result = runner.invoke(app, [*command, "--addr", down])
        assert_fails(result, EXIT_CODES["UNAVAILABLE"], down, "memosd")
    bad_flag = run(server, "put", "x", "--meta", "novalue")
    assert bad_flag.exit_code == 2 and bad_flag.stdout == "" and "KEY=VALUE" in bad_flag.stderr


def test_tail_sees_a_put_made_by_another_client(server: ServerHandle) -> None:
    stop = threading.Event()
    written: list[str] = []

    def write() -> None:
        # The watch subscribes asynchronously: keep putting until tail has seen one.
        with MemosClient(server.addr, token=server.tokens["acme"]) as writer:
            while not stop.is_set() and len(written) < 200:
                written.append(writer.put(f"tailed note {len(written)}", namespace="live").id)
                time.sleep(0.1)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        result = run(server, "tail", "-n", "live", "--count", "2", "--json")
    finally:
        stop.set()
        thread.join(10)
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(events) == 2
    for event in events:
        assert event["type"] == "put" and event["id"] in written
        assert event["namespace"] == "live" and event["cube"]["text"].startswith("tailed note")


def test_tenant_flag_is_refused_for_another_tenants_token(server: ServerHandle) -> None:
    result = run(server, "stats", "--tenant", "globex")
    assert_fails(result, EXIT_CODES["PERMISSION_DENIED"], "tenant")
    admin = ok_json(
        run(server, "put", "ops acts for globex", "--tenant", "globex", "--json", who="admin")
    )
    assert admin["tenant"] == "globex"


def test_dev_mode_tenant_flag_picks_the_tenant(dev_server: ServerHandle) -> None:
    put = ok_json(run(dev_server, "put", "team note", "--tenant", "team-a", "--json"))
    assert put["tenant"] == "team-a"
    assert ok_json(run(dev_server, "put", "plain note", "--json"))["tenant"] == "default"
    assert (
        ok_json(run(dev_server, "ls", "--tenant", "team-a", "--json"))["cubes"][0]["id"]
        == put["id"]
    )
