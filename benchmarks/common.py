"""What every benchmark shares: the machine it ran on, tables, targets and the JSON line.

Each benchmark is ``python -m benchmarks.NAME [--quick] [--json]``: it prints a table and,
with ``--json``, ends with one line
``{"bench": NAME, "machine": ..., "results": {...}, "targets": {T: {value, target, met}}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


def free_port() -> int:
    """A TCP port on localhost that is free now (for a server the benchmark starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> str:
    """A short description of this machine: CPU model, cores, memory."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    return f"{model}, {cores} cores{mem}"


@dataclass(frozen=True, slots=True)
class Target:
    """A target the issue names: ``value`` measured, ``met`` computed from it."""

    value: float
    target: float
    higher_is_better: bool = True

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def as_json(self) -> dict[str, Any]:
        return {"value": round(self.value, 6), "target": self.target, "met": self.met}


def percentile(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q)) if samples else 0.0


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)
    ]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def print_targets(targets: Mapping[str, Target]) -> None:
    print_table(
        "targets",
        ["target", "value", "goal", "met"],
        [
            [
                name,
                t.value,
                f"{'>=' if t.higher_is_better else '<='} {t.target}",
                "yes" if t.met else "NO",
            ]
            for name, t in targets.items()
        ],
    )


def emit_json(name: str, results: Mapping[str, Any], targets: Mapping[str, Target]) -> None:
    doc = {
        "bench": name,
        "machine": machine(),
        "results": results,
        "targets": {k: t.as_json() for k, t in targets.items()},
    }
    print(json.dumps(doc, default=_json_default))


def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=description)
    p.add_argument(
        "--quick", action="store_true", help="a small run that finishes in under a minute"
    )
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")
    return p


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
