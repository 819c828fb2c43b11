"""memosctl search --mode and memosctl reindex against a real gRPC server on localhost."""

from __future__ import annotations

from pathlib import Path

from memos.cli.exits import EXIT_CODES
from tests.cli.test_memosctl import assert_fails, ok_json, run
from tests.fixtures.daemon import ServerHandle, start_server


def test_search_mode_flag(server: ServerHandle) -> None:
    for text in ("the wifi password is on the router", "the contract id is XQ7Z4"):
        ok_json(run(server, "put", text, "--json"))
    lexical = ok_json(run(server, "search", "XQ7Z4", "--mode", "lexical", "--json"))
    assert [r["text"] for r in lexical["results"]] == ["the contract id is XQ7Z4"]
    for mode in ("dense", "hybrid"):
        found = ok_json(run(server, "search", "wireless network key", "--mode", mode, "--json"))
        assert found["results"][0]["text"] == "the wifi password is on the router"
    result = run(server, "search", "x", "--mode", "fuzzy")
    assert result.exit_code != 0 and "fuzzy" in result.stderr


def test_reindex_command(tmp_path: Path) -> None:
    handle = start_server(
        tmp_path / "data", tokens=True, plaintext={"embed_templates": {"*": "{speaker}: {text}"}}
    )
    try:
        ok_json(run(handle, "put", "I planted tulips", "-m", "speaker=Odalys", "--json"))
        assert_fails(run(handle, "reindex"), EXIT_CODES["PERMISSION_DENIED"], "admin")
        done = ok_json(run(handle, "reindex", "--all", "--tenant", "acme", "--json", who="admin"))
        assert done == {"reindexed": 1, "total": 1}
        again = ok_json(run(handle, "reindex", "--tenant", "acme", "--json", who="admin"))
        assert again == {"reindexed": 0, "total": 0}
        found = ok_json(run(handle, "search", "Odalys", "--mode", "lexical", "--json"))
        assert [r["text"] for r in found["results"]] == ["I planted tulips"]
    finally:
        handle.server.stop(grace_s=1)
