"""The ``python -m scheduler.bench`` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scheduler.bench import main
from tests.scheduler._traces import TRACES, traces


def test_help_runs_as_a_module() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "scheduler.bench", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in ("--traces", "--k", "--policies", "--bits", "--flip", "--false-evict"):
        assert flag in out
    assert "--false-keep" in out and "--sigma" in out and "--seeds" in out and "--speed" in out


def test_trace_table_and_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    traces("brightkite")  # skips without the shared data
    pattern = str(TRACES / "brightkite" / "bk1*.txt.gz")
    assert main(["--traces", pattern, "--k", "10", "--policies", "lru,mark0", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split() == ["policy", "misses", "ratio", "to", "OPT"]
    record = json.loads(lines[-1])
    assert set(record) == {"k", "opt", "results"}
    assert record["k"] == 10 and set(record["results"]) == {"lru", "mark0"}
    # Oracle bits by default: Mark0 is exactly OPT.
    assert record["results"]["mark0"] == record["opt"] < record["results"]["lru"]


def test_noise_and_seeds_average(capsys: pytest.CaptureFixture[str]) -> None:
    traces("brightkite")
    pattern = str(TRACES / "brightkite" / "bk1*.txt.gz")
    args = ["--traces", pattern, "--k", "10", "--policies", "mark0-rand", "--flip", "0.3"]
    assert main([*args, "--seeds", "3", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["results"]["mark0-rand"] > record["opt"]


def test_errors_are_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--traces", "nothing-here/*.gz", "--k", "3"]) == 2
    assert "no trace matches" in capsys.readouterr().err
    assert main(["--traces", "x", "--k", "3", "--bits", "learned", "--flip", "0.1"]) == 2
    assert main(["--k", "3"]) == 2


def test_speed_mode_reports_the_robust_to_lru_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--speed", "--requests", "3000", "--policies", "lru,robust-mark0", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["bench"] == "scheduler.speed"
    assert set(record["results"]) == {"k=100", "k=10000"}
    for target in record["targets"].values():
        assert target["target"] == 3.0 and target["met"] == (target["value"] <= 3.0)


def test_workload_mode(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--workload", "--requests", "3000", "--policies", "lru,gds-bits", "--json"]
    assert main(args) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "gds-bits [oracle]" in record["results"]
    assert main(["--workload", "--policies", "marker"]) == 2
