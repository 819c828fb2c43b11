"""Request traces: the gzip one-key-per-line format of ``../shared/traces`` and a Zipf
generator for speed runs."""

from __future__ import annotations

import bisect
import glob
import gzip
import itertools
import random
from pathlib import Path


def load_trace(path: str | Path) -> list[str]:
    """One trace: a gzip text file holding one page id per line (or whitespace separated)."""
    with gzip.open(path, "rt") as f:
        return f.read().split()


def load_traces(pattern: str) -> list[tuple[str, list[str]]]:
    """Every trace matching a glob (a folder means all its ``*.gz``), sorted by path."""
    if Path(pattern).is_dir():
        pattern = str(Path(pattern) / "*.gz")
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"no trace matches {pattern!r}")
    return [(Path(p).name, load_trace(p)) for p in paths]


def zipf_trace(n: int, universe: int, alpha: float = 0.9, seed: int = 0) -> list[int]:
    """``n`` requests over keys ``0..universe-1`` with Zipf(alpha) popularity.

    Popularity ranks are shuffled over the key space so that key order carries no signal.
    """
    rng = random.Random(seed)
    weights = [1.0 / (r + 1) ** alpha for r in range(universe)]
    cum = list(itertools.accumulate(weights))
    total = cum[-1]
    ids = list(range(universe))
    rng.shuffle(ids)
    out = []
    for _ in range(n):
        rank = bisect.bisect_left(cum, rng.random() * total)
        out.append(ids[min(rank, universe - 1)])
    return out
