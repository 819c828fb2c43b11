"""Exact miss counts on ../shared/traces (brightkite k=10, citibike k=100)."""

from __future__ import annotations

import pytest

from scheduler.experiment import evaluate, opt_misses
from scheduler.predict.oracle import phase_ids
from scheduler.predict.sources import BitSpec
from tests.scheduler._traces import K, traces

SETS = ["brightkite", "citibike"]
OPT = {"brightkite": 22_406, "citibike": 77_637}
LRU = {"brightkite": 28_816, "citibike": 144_553}
BEST_MARKING = {"brightkite": 27_287, "citibike": 124_793}


def best_marking(folder: str) -> int:
    """Cost of the best marking algorithm, computed directly: the pages new in each k-phase."""
    total = 0
    for keys in traces(folder):
        pages: dict[int, set[str]] = {}
        for key, ph in zip(keys, phase_ids(keys, K[folder]), strict=True):
            pages.setdefault(ph, set()).add(key)
        total += sum(len(p - pages.get(i - 1, set())) for i, p in pages.items())
    return total


@pytest.mark.parametrize("folder", SETS)
def test_opt_and_lru_match_the_published_totals(folder: str) -> None:
    ev = evaluate(traces(folder), K[folder], ["lru", "gds"], BitSpec("none"))
    assert ev.opt == OPT[folder]
    assert ev.results["lru"] == LRU[folder]
    # GreedyDual-Size on unit sizes and costs is LRU.
    assert ev.results["gds"] == LRU[folder]


@pytest.mark.parametrize("folder", SETS)
def test_perfect_discard_bits_give_exactly_opt(folder: str) -> None:
    names = ["mark0", "mark0-rand", "robust-mark0", "gds-bits", "robust-gds-bits", "ftp"]
    ev = evaluate(traces(folder), K[folder], names, BitSpec("oracle"))
    assert ev.results == dict.fromkeys(names, OPT[folder])


@pytest.mark.parametrize("folder", SETS)
def test_perfect_phase_bits_give_the_best_marking_algorithm(folder: str) -> None:
    assert best_marking(folder) == BEST_MARKING[folder]
    names = ["mark-predict", "robust-mark-predict", "predictive-marker", "lmarker"]
    ev = evaluate(traces(folder), K[folder], names, BitSpec("oracle"))
    assert ev.results == dict.fromkeys(names, BEST_MARKING[folder])
    # Ratio to OPT: 1.218 and 1.607 here (1.225 and 1.602 on the published full sets).
    assert (
        round(BEST_MARKING[folder] / OPT[folder], 3)
        == {
            "brightkite": 1.218,
            "citibike": 1.607,
        }[folder]
    )


def test_without_bits_the_one_bit_policies_fall_back_to_classical_ones() -> None:
    keys = traces("brightkite")
    ev = evaluate(keys, 10, ["mark0", "robust-mark0", "gds-bits"], BitSpec("none"))
    assert ev.results == {"mark0": LRU["brightkite"], "robust-mark0": 28_816, "gds-bits": 28_816}
    assert opt_misses(keys[:1], 10) == evaluate(keys[:1], 10, ["ftp"]).results["ftp"]
