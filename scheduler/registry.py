"""Policies by their command-line names: ``make_policy("lru", budget)``.

- sized (byte budgets) and pinnable: ``lru``, ``gds``, ``gdsf``, ``gds-bits``,
  ``robust-mark0``, ``robust-gds-bits``;
- sized, not pinnable: ``mark0``, ``mark0-rand``;
- unit-size only, pinnable: ``robust-mark-predict``, ``lnonmarker``;
- unit-size only, not pinnable: ``opt`` (offline), ``marker``, ``ftp``,
  ``predictive-marker``, ``lmarker``, ``mark-predict``.

``robust-mark0`` is the robust one-bit policy the daemon defaults to. ``gdsf`` and
``robust-gds-bits`` are additions beyond the issue's list.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.policies.classic import LRU, Belady, Marker
from scheduler.policies.next_arrival import (
    FollowThePrediction,
    LMarker,
    LNonMarkerCore,
    PredictiveMarker,
)
from scheduler.policies.one_bit import Mark0, MarkPredict
from scheduler.policies.robust import FollowTheBetter
from scheduler.policies.robust_mark0 import RobustMark0
from scheduler.policies.sized import GreedyDualSize, GreedyDualSizeBits
from scheduler.policy import BitKind, Policy

Factory = Callable[..., Policy]


def _classical(name: str, budget: int, seed: int) -> Policy:
    if name == "lru":
        return LRU(budget)
    if name == "marker":
        return Marker(budget, seed=seed + 1)
    raise ValueError(f"the robust combiner follows 'lru' or 'marker', not {name!r}")


def _robust_mark0(
    budget: int,
    *,
    seed: int = 0,
    classical: str = "lru",
    randomized: bool = False,
    window: int | None = 4_000,
    lam: float = 1.0,
    margin: float = 0.0,
) -> Policy:
    if classical == "lru" and not randomized:
        return RobustMark0(budget, window=window, lam=lam, margin=margin)
    return FollowTheBetter(
        budget,
        Mark0(budget, randomized=randomized, seed=seed),
        _classical(classical, budget, seed),
        window=window,
        lam=lam,
        margin=margin,
        name="robust-mark0",
    )


def _robust_mark_predict(
    budget: int,
    *,
    seed: int = 0,
    classical: str = "lru",
    window: int | None = 4_000,
    lam: float = 1.0,
    margin: float = 0.0,
) -> Policy:
    return FollowTheBetter(
        budget,
        MarkPredict(budget, seed=seed),
        _classical(classical, budget, seed),
        window=window,
        lam=lam,
        margin=margin,
        name="robust-mark-predict",
    )


def _robust_gds_bits(
    budget: int,
    *,
    seed: int = 0,
    frequency: bool = False,
    window: int | None = 4_000,
    lam: float = 1.0,
    margin: float = 0.0,
) -> Policy:
    return FollowTheBetter(
        budget,
        GreedyDualSizeBits(budget, frequency=frequency),
        GreedyDualSize(budget, frequency=frequency),
        window=window,
        lam=lam,
        margin=margin,
        name="robust-gds-bits",
    )


def _lnonmarker(budget: int, *, seed: int = 0) -> Policy:
    # As in ACEPS: Rohatgi's non-marking algorithm combined with Marker, cumulative costs.
    return FollowTheBetter(
        budget,
        LNonMarkerCore(budget, seed=seed),
        Marker(budget, seed=seed + 1),
        window=None,
        name="lnonmarker",
    )


def _opt(budget: int, *, seed: int = 0, trace: Sequence[Hashable] | None = None) -> Policy:
    if trace is None:
        raise ValueError(
            "'opt' is offline (Belady needs the future): pass the whole trace, "
            "make_policy('opt', k, trace=keys), or use make_opt(k, keys)"
        )
    return Belady(budget, trace)


def _lru(budget: int, *, seed: int = 0) -> Policy:
    return LRU(budget)


def _marker(budget: int, *, seed: int = 0) -> Policy:
    return Marker(budget, seed=seed)


def _ftp(budget: int, *, seed: int = 0) -> Policy:
    return FollowThePrediction(budget)


def _predictive_marker(budget: int, *, seed: int = 0) -> Policy:
    return PredictiveMarker(budget, seed=seed)


def _lmarker(budget: int, *, seed: int = 0) -> Policy:
    return LMarker(budget, seed=seed)


def _mark0(budget: int, *, seed: int = 0, default_bit: int = 1) -> Policy:
    return Mark0(budget, default_bit=default_bit)


def _mark0_rand(budget: int, *, seed: int = 0, default_bit: int = 1) -> Policy:
    return Mark0(budget, randomized=True, seed=seed, default_bit=default_bit)


def _mark_predict(budget: int, *, seed: int = 0, default_bit: int = 0) -> Policy:
    return MarkPredict(budget, seed=seed, default_bit=default_bit)


def _gds(budget: int, *, seed: int = 0, frequency: bool = False) -> Policy:
    return GreedyDualSize(budget, frequency=frequency)


def _gdsf(budget: int, *, seed: int = 0) -> Policy:
    return GreedyDualSize(budget, frequency=True)


def _gds_bits(budget: int, *, seed: int = 0, frequency: bool = False) -> Policy:
    return GreedyDualSizeBits(budget, frequency=frequency)


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """What the simulator needs to know to feed a policy."""

    factory: Factory
    bit_kind: BitKind = "none"
    next_arrival: bool = False
    sized: bool = False
    pinnable: bool = False
    summary: str = ""


POLICIES: dict[str, PolicyInfo] = {
    "opt": PolicyInfo(_opt, summary="Belady's offline OPT (needs trace=)"),
    "lru": PolicyInfo(_lru, sized=True, pinnable=True, summary="least recently used"),
    "marker": PolicyInfo(_marker, summary="randomized marking"),
    "ftp": PolicyInfo(_ftp, next_arrival=True, summary="follow the prediction (BlindOracle)"),
    "predictive-marker": PolicyInfo(
        _predictive_marker, next_arrival=True, summary="Lykouris-Vassilvitskii"
    ),
    "lmarker": PolicyInfo(_lmarker, next_arrival=True, summary="Rohatgi"),
    "lnonmarker": PolicyInfo(
        _lnonmarker, next_arrival=True, pinnable=True, summary="Rohatgi, combined with Marker"
    ),
    "mark0": PolicyInfo(
        _mark0, bit_kind="discard", sized=True, summary="lazy Mark0, deterministic"
    ),
    "mark0-rand": PolicyInfo(
        _mark0_rand, bit_kind="discard", sized=True, summary="lazy Mark0, randomized"
    ),
    "mark-predict": PolicyInfo(_mark_predict, bit_kind="phase", summary="Mark&Predict"),
    "robust-mark0": PolicyInfo(
        _robust_mark0,
        bit_kind="discard",
        sized=True,
        pinnable=True,
        summary="Mark0 or LRU, whichever did better lately",
    ),
    "robust-mark-predict": PolicyInfo(
        _robust_mark_predict, bit_kind="phase", pinnable=True, summary="Mark&Predict or LRU"
    ),
    "gds": PolicyInfo(_gds, sized=True, pinnable=True, summary="GreedyDual-Size"),
    "gds-bits": PolicyInfo(
        _gds_bits,
        bit_kind="discard",
        sized=True,
        pinnable=True,
        summary="GreedyDual-Size, discard bits first",
    ),
    "gdsf": PolicyInfo(_gdsf, sized=True, pinnable=True, summary="GreedyDual-Size-Frequency"),
    "robust-gds-bits": PolicyInfo(
        _robust_gds_bits,
        bit_kind="discard",
        sized=True,
        pinnable=True,
        summary="gds-bits or gds, whichever did better lately",
    ),
}

#: Every policy name the command line accepts, in table order.
POLICY_NAMES: tuple[str, ...] = tuple(POLICIES)


def policy_info(name: str) -> PolicyInfo:
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(
            f"unknown policy {name!r}; choose one of: {', '.join(POLICY_NAMES)}"
        ) from None


def make_policy(name: str, budget: int, *, seed: int = 0, **kwargs: Any) -> Policy:
    """Build the policy called ``name`` with capacity ``budget`` (items, or bytes if sized).

    ``seed`` fixes every random choice. Extra keyword arguments go to the policy's
    constructor (e.g. ``window=`` and ``lam=`` for the robust combiners). ``"opt"`` is
    offline and requires ``trace=`` (the whole request sequence), or use ``make_opt``.
    """
    return policy_info(name).factory(budget, seed=seed, **kwargs)


def make_opt(budget: int, trace: Sequence[Hashable]) -> Belady:
    """Belady's offline OPT for ``trace`` (it must then be fed exactly that trace)."""
    return Belady(budget, trace)
