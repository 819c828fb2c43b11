"""Evaluate policies on sets of unit-size paging traces (what the benchmark and tests run)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scheduler.policies.classic import Belady
from scheduler.predict.noise import BitKind
from scheduler.predict.oracle import noisy_next_arrivals
from scheduler.predict.sources import BitSpec, learned_trace_bits, oracle_bits
from scheduler.registry import make_policy, policy_info
from scheduler.sim import count_misses


@dataclass(slots=True)
class Evaluation:
    """Total misses over all traces (means over seeds for the policies)."""

    k: int
    opt: int
    results: dict[str, float] = field(default_factory=dict)

    def ratio(self, name: str) -> float:
        return self.results[name] / self.opt if self.opt else float("nan")


def trace_seed(seed: int, index: int) -> int:
    """The seed of trace ``index`` in run ``seed``: distinct and reproducible."""
    return seed * 1_000_003 + index


def opt_misses(traces: Sequence[Sequence[Hashable]], k: int) -> int:
    return sum(count_misses(Belady(k, keys), keys) for keys in traces)


def evaluate(
    traces: Sequence[Sequence[Hashable]],
    k: int,
    policies: Sequence[str],
    spec: BitSpec | None = None,
    *,
    seeds: int = 1,
    policy_kwargs: dict[str, dict[str, Any]] | None = None,
) -> Evaluation:
    """Run every policy on every trace with fresh caches; total the misses per policy.

    Each policy gets the bits of its own kind as ``spec`` says, next-arrival policies get
    LogNormal(0, ``spec.sigma``) noisy predictions. With ``seeds > 1`` the noise and the
    policies' randomness change per seed and the results are the mean totals. Learned bits
    do not depend on the seed (the predictor is deterministic and online).
    """
    spec = spec or BitSpec()
    policy_kwargs = policy_kwargs or {}
    ev = Evaluation(k=k, opt=opt_misses(traces, k))
    learned: dict[BitKind, list[list[int]]] = {}
    totals = dict.fromkeys(policies, 0.0)
    for s in range(seeds):
        for i, keys in enumerate(traces):
            seed = trace_seed(s, i)
            bits_of: dict[BitKind, list[int]] = {}
            arrivals: list[float] | None = None
            for name in policies:
                info = policy_info(name)
                if name == "opt":
                    totals[name] += count_misses(Belady(k, keys), keys)
                    continue
                policy = make_policy(name, k, seed=seed, **policy_kwargs.get(name, {}))
                kind = info.bit_kind
                bits: list[int] | None = None
                if kind != "none" and spec.gives(kind):
                    if spec.source == "learned":
                        if kind not in learned:
                            learned[kind] = learned_trace_bits(kind, traces, k)
                        bits = learned[kind][i]
                    else:
                        if kind not in bits_of:
                            bits_of[kind] = oracle_bits(spec, kind, keys, k, seed)
                        bits = bits_of[kind]
                if info.next_arrival and arrivals is None:
                    arrivals = noisy_next_arrivals(keys, spec.sigma, seed)
                totals[name] += count_misses(
                    policy, keys, bits, arrivals if info.next_arrival else None
                )
    ev.results = {name: total / seeds for name, total in totals.items()}
    return ev
