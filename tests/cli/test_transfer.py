"""memosctl export / import: JSON Lines round trips between tenants of a real server."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner, Result

from memos.cli.app import app
from memos.cli.exits import EXIT_CODES
from memos.client import MemosClient
from memos.cube import CubeInput, MemCube, Source
from tests.fixtures.daemon import ServerHandle

runner = CliRunner(env={"MEMOS_ADDR": None, "MEMOS_TOKEN": None, "MEMOS_TENANT": None})

# What an import must carry over: everything a writer chose (ids and times are new).
KEPT = ("text", "namespace", "tags", "metadata", "pinned", "priority", "source")


def cli(handle: ServerHandle, who: str, *args: str, stdin: str | None = None) -> Result:
    return runner.invoke(
        app, [*args, "--addr", handle.addr, "--token", handle.tokens[who]], input=stdin
    )


def kept(cube: MemCube) -> tuple[object, ...]:
    return tuple(getattr(cube, name) for name in KEPT)


def seed(memos: MemosClient) -> list[MemCube]:
    inputs = [
        CubeInput(
            text=f"memory number {i}: the runner {i % 5} builds branch {i}",
            namespace=("ops", "people", "default")[i % 3],
            tags=(f"t{i % 4}", "seed"),
            metadata={"n": str(i)} if i % 2 else {},
            pinned=i % 7 == 0,
            priority=i % 3,
            source=Source(writer="seeder", message_id=f"m{i}"),
            ttl_seconds=86400 if i % 5 == 0 else 0,
        )
        for i in range(23)
    ]
    return memos.put_batch(inputs)


def test_export_import_round_trip_keeps_content_and_embeddings(
    server: ServerHandle, tmp_path: Path
) -> None:
    dump, id_map = tmp_path / "acme.jsonl", tmp_path / "ids.jsonl"
    with MemosClient(server.addr, token=server.tokens["acme"]) as acme:
        originals = seed(acme)
        acme.delete(originals[-1].id)  # a tombstone is not exported by default
        originals = originals[:-1]

    exported = cli(server, "acme", "export", str(dump), "--json")
    assert exported.exit_code == 0, exported.stderr
    assert json.loads(exported.stdout)["exported"] == len(originals)
    lines = dump.read_text().splitlines()
    assert len(lines) == len(originals)
    assert all(json.loads(line)["plaintext"]["embedding"] for line in lines)
    assert not (tmp_path / "acme.jsonl.partial").exists()

    imported = cli(server, "globex", "import", str(dump), "--id-map", str(id_map), "--json")
    assert imported.exit_code == 0, imported.stderr
    summary = json.loads(imported.stdout)
    assert summary["imported"] == summary["new_ids"] == len(originals)
    assert summary["reembedded"] == 0 and summary["skipped"] == {}

    pairs = [json.loads(line) for line in id_map.read_text().splitlines()]
    assert [p["old"] for p in pairs] == [c.id for c in originals]
    with (
        MemosClient(server.addr, token=server.tokens["acme"]) as acme,
        MemosClient(server.addr, token=server.tokens["globex"]) as globex,
    ):
        copies = list(globex.list())
        assert len(copies) == len(originals)
        assert [kept(c) for c in copies] == [kept(c) for c in originals]
        for old, pair in zip(originals, pairs, strict=True):
            new = globex.get(pair["new"], include_embedding=True)
            assert new.id != old.id and new.tenant == "globex"
            before = acme.get(old.id, include_embedding=True)
            assert before.plaintext is not None and new.plaintext is not None
            assert new.plaintext.embedding == before.plaintext.embedding
            assert (new.expires_at is None) == (old.expires_at is None)


def test_export_to_stdout_with_a_state_filter_and_reimport_from_stdin(
    server: ServerHandle,
) -> None:
    with MemosClient(server.addr, token=server.tokens["acme"]) as acme:
        keep = acme.put("still here", tags=["x"])
        gone = acme.put("deleted soon")
        acme.delete(gone.id)
    everything = cli(
        server,
        "acme",
        "export",
        "-",
        "--state",
        "active",
        "--state",
        "tombstone",
        "--no-embeddings",
    )
    assert everything.exit_code == 0, everything.stderr
    docs = [json.loads(line) for line in everything.stdout.splitlines()]
    assert {d["id"]: d["state"] for d in docs} == {keep.id: "active", gone.id: "tombstone"}
    assert "exported 2 cubes" in everything.stderr

    back = cli(
        server,
        "globex",
        "import",
        "-",
        "--namespace",
        "restored",
        "--json",
        stdin=everything.stdout,
    )
    summary = json.loads(back.stdout)
    assert summary["imported"] == 1 and summary["skipped"] == {"tombstone": 1}
    assert summary["reembedded"] == 1
    with MemosClient(server.addr, token=server.tokens["globex"]) as globex:
        (copy,) = list(globex.list())
        assert (copy.text, copy.namespace, copy.tags) == ("still here", "restored", ("x",))


def test_import_takes_bare_inputs_and_names_a_bad_line(
    server: ServerHandle, tmp_path: Path
) -> None:
    good = tmp_path / "bare.jsonl"
    good.write_text(
        '{"text": "bare one", "tags": ["a"]}\n\n{"text": "bare two", "namespace": "n2"}\n'
    )
    result = cli(server, "acme", "import", str(good), "--batch-size", "1")
    assert result.exit_code == 0, result.stderr
    assert "imported 2 of 2 cubes in 2 batches" in result.stdout
    assert "new ids" in result.stdout

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n')
    failed = cli(server, "acme", "import", str(bad))
    assert failed.exit_code == EXIT_CODES["INVALID_ARGUMENT"]
    assert failed.stdout == "" and "line 2" in failed.stderr

    refused = cli(server, "reader", "import", str(good))
    assert refused.exit_code == EXIT_CODES["PERMISSION_DENIED"]
    assert "lines 1-3" in refused.stderr and "0 cubes imported" in refused.stderr

    missing = cli(server, "acme", "import", str(tmp_path / "absent.jsonl"))
    assert missing.exit_code == 1 and "absent.jsonl" in missing.stderr


def test_reembed_drops_the_exported_vectors(server: ServerHandle, tmp_path: Path) -> None:
    dump = tmp_path / "one.jsonl"
    with MemosClient(server.addr, token=server.tokens["acme"]) as acme:
        acme.put("a vector travels")
    assert cli(server, "acme", "export", str(dump)).exit_code == 0
    result = cli(server, "globex", "import", str(dump), "--reembed", "--json")
    assert json.loads(result.stdout)["reembedded"] == 1
