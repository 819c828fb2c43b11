"""Bit streams for whole traces, as the simulator and the benchmark ask for them."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

from scheduler.predict.learned import LearnedConfig, learned_bits
from scheduler.predict.noise import BitKind, false_evict, false_keep, flip
from scheduler.predict.oracle import (
    discard_bits,
    noisy_discard_bits,
    noisy_phase_bits,
    phase_bits,
)

Source = Literal["none", "oracle", "oracle-discard", "oracle-phase", "learned"]


@dataclass(frozen=True, slots=True)
class BitSpec:
    """Where bits come from and what noise they carry.

    - ``none``: no bits (each policy falls back to its classical behaviour);
    - ``oracle``: every policy gets the oracle bits of its own kind (evaluation only);
    - ``oracle-discard`` / ``oracle-phase``: only the policies of that kind get oracle bits;
    - ``learned``: every policy gets the online learned bits of its own kind.

    Noise applies to oracle bits only: ``sigma`` derives them from LogNormal(0, sigma)
    noisy next-arrival predictions, then ``flip`` / ``false_evict`` / ``false_keep`` flip
    them symmetrically or one-sidedly.
    """

    source: Source = "oracle"
    flip: float = 0.0
    false_evict: float = 0.0
    false_keep: float = 0.0
    sigma: float = 0.0

    def __post_init__(self) -> None:
        noisy = self.flip or self.false_evict or self.false_keep or self.sigma
        if noisy and not self.source.startswith("oracle"):
            raise ValueError("noise (flip, false-evict, false-keep, sigma) applies to oracle bits")

    def gives(self, kind: BitKind) -> bool:
        """Whether a policy reading ``kind`` bits gets any."""
        return self.source in ("oracle", "learned", f"oracle-{kind}")


def oracle_bits(
    spec: BitSpec, kind: BitKind, keys: Sequence[Hashable], k: int, seed: int = 0
) -> list[int]:
    """Oracle bits of ``kind`` for one trace with the noise of ``spec``."""
    if kind == "discard":
        bits = (
            noisy_discard_bits(keys, k, spec.sigma, seed) if spec.sigma else discard_bits(keys, k)
        )
    else:
        bits = noisy_phase_bits(keys, k, spec.sigma, seed) if spec.sigma else phase_bits(keys, k)
    # Distinct streams per noise type, so that combining them stays independent.
    bits = flip(bits, spec.flip, seed)
    bits = false_evict(bits, spec.false_evict, kind, seed + 1)
    return false_keep(bits, spec.false_keep, kind, seed + 2)


def learned_trace_bits(
    kind: BitKind, traces: Sequence[Sequence[Hashable]], k: int
) -> list[list[int]]:
    """Online learned bits for a list of traces (one model carried across them)."""
    return learned_bits(traces, LearnedConfig(kind=kind, k=k))
