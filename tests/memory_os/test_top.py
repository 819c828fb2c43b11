"""memosctl top against a real daemon: one snapshot (--json, --once) of tiers, caches, jobs."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from memos.cli.app import app
from memos.client import JobsClient, MemosClient
from tests.fixtures.daemon import ServerHandle, free_port

RUNNER = CliRunner(env={"MEMOS_ADDR": None, "MEMOS_TOKEN": None, "MEMOS_TENANT": None})


def test_top_json_reports_tiers_hit_rates_and_jobs(server: ServerHandle) -> None:
    with (
        MemosClient(server.addr, token=server.tokens["acme"]) as acme,
        MemosClient(server.addr, token=server.tokens["admin"]) as ops,
    ):
        cube = acme.put("The release train leaves every second Thursday.")
        acme.put("Another memory, never read.")
        acme.get(cube.id)
        acme.get(cube.id)  # the second read of a resident cube is a hit of the activated set
        JobsClient(ops).run_job("retrain")

    flags = ["--addr", server.addr, "--token", server.tokens["acme"]]
    out = RUNNER.invoke(app, ["top", "--json", *flags])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["plaintext"]["cubes"] == 2 and doc["plaintext"]["by_kind"] == {"plaintext": 2}
    (activated,) = [c for c in doc["caches"] if c["name"] == "activated"]
    assert activated["policy"] == "robust-mark0" and activated["unit"] == "tokens"
    assert (int(activated["requests"]), int(activated["hits"])) == (2, 1)
    assert int(activated["residents"]) == 1 and int(activated["used"]) > 0
    assert doc["tenants"] >= 1
    levels = {lv["name"] for lv in doc["activation"]["levels"]}
    assert levels, doc["activation"]
    jobs = {j["name"]: j for j in doc["jobs"]}
    assert {"expire", "fuse", "fuse-coretrieved", "retrain"} <= set(jobs)
    assert jobs["retrain"]["runs"] and jobs["retrain"]["runs"][-1]["ok"]

    once = RUNNER.invoke(app, ["top", "--once", *flags])
    assert once.exit_code == 0, once.output
    for word in ("tiers", "managed caches", "activated", "robust-mark0", "50.0% of 2", "retrain"):
        assert word in once.output, (word, once.output)


def test_top_without_a_daemon_exits_with_unavailable() -> None:
    out = RUNNER.invoke(app, ["top", "--once", "--addr", f"127.0.0.1:{free_port()}"])
    assert out.exit_code != 0 and "unavailable" in out.output.lower(), out.output
