"""The paging traces of ``../shared/traces``, loaded once per test session."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from scheduler.traces import load_traces

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "traces"

#: The literature's cache sizes for the two sets.
K = {"brightkite": 10, "citibike": 100}


@functools.cache
def _load(folder: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(keys) for _, keys in load_traces(str(TRACES / folder)))


def traces(folder: str) -> list[list[str]]:
    """Every trace of ``folder`` (skips the test when the shared data is absent)."""
    if not (TRACES / folder).is_dir():
        pytest.skip(f"../shared/traces/{folder} is not available")
    return [list(t) for t in _load(folder)]
