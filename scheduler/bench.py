"""Trace benchmark: ``python -m scheduler.bench --traces GLOB --k K [...]``.

Three modes:
- traces (default): total misses of each policy over a set of paging traces, with the
  ratio to Belady's OPT. ``--json`` ends with ``{"k": K, "opt": N, "results": {...}}``.
- ``--speed``: CPU microseconds per request of each policy at k = 100 and k = 10,000 on a
  1M-request Zipf trace (``--quick``: 200k requests); the target is the robust one-bit
  policy (robust-mark0) within 3x LRU's time.
- ``--workload``: the synthetic multi-tenant LLM-memory workload (sized items, byte
  budget): misses, byte misses and cost-weighted misses of the sized policies.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

from scheduler.experiment import evaluate
from scheduler.predict.learned import BitPredictor, LearnedConfig
from scheduler.predict.noise import flip
from scheduler.predict.oracle import discard_bits, noisy_next_arrivals, phase_bits
from scheduler.predict.sources import BitSpec
from scheduler.registry import POLICY_NAMES, make_policy, policy_info
from scheduler.sim import SimResult, simulate
from scheduler.traces import load_traces, zipf_trace
from scheduler.workload import MIB, WorkloadConfig, generate

ROBUST = "robust-mark0"
SPEED_TARGET = 3.0


def machine() -> str:
    """CPU model, core count and Python version, for benchmark records."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else round(x, 1)


def run_traces(args: argparse.Namespace) -> int:
    if not args.traces or not args.k:
        print("error: --traces and --k are required (or use --speed / --workload)", file=sys.stderr)
        return 2
    named = load_traces(args.traces)
    traces = [keys for _, keys in named]
    names = _policies(args.policies)
    spec = BitSpec(
        source=args.bits,
        flip=args.flip,
        false_evict=args.false_evict,
        false_keep=args.false_keep,
        sigma=args.sigma,
    )
    ev = evaluate(traces, args.k, names, spec, seeds=args.seeds)
    print(
        f"{len(traces)} traces, {sum(map(len, traces)):,} requests, k={args.k}, "
        f"bits={args.bits}, flip={args.flip}, false-evict={args.false_evict}, "
        f"false-keep={args.false_keep}, sigma={args.sigma}, seeds={args.seeds}"
    )
    rows = [[name, f"{_num(ev.results[name]):,}", f"{ev.ratio(name):.3f}"] for name in names]
    print(_table(["policy", "misses", "ratio to OPT"], rows))
    print(f"OPT: {ev.opt:,} misses")
    if args.json:
        results = {name: _num(v) for name, v in ev.results.items()}
        print(json.dumps({"k": args.k, "opt": ev.opt, "results": results}))
    return 0


def _policies(arg: str | None) -> list[str]:
    if not arg:
        return [n for n in POLICY_NAMES if n not in ("opt", "gdsf")]
    names = [n.strip() for n in arg.split(",") if n.strip()]
    for n in names:
        policy_info(n)  # raises on unknown names
    return names


def _runner(name: str, k: int, keys: Sequence[int], bits: dict[str, Any]) -> Any:
    """A function that serves requests [lo, hi) of ``keys`` on a fresh ``name`` policy."""
    info = policy_info(name)
    policy = make_policy(name, k, trace=keys) if name == "opt" else make_policy(name, k)
    req = policy.request
    if info.next_arrival:
        arrivals = bits["arrivals"]

        def run_na(lo: int, hi: int) -> None:
            for key, a in zip(keys[lo:hi], arrivals[lo:hi], strict=True):
                req(key, 1, 1.0, None, next_arrival=a)  # type: ignore[call-arg]

        return run_na
    seq = bits.get(info.bit_kind) or bits["none"]

    def run(lo: int, hi: int) -> None:
        for key, b in zip(keys[lo:hi], seq[lo:hi], strict=True):
            req(key, 1, 1.0, b)

    return run


def time_policies(
    names: Sequence[str],
    k: int,
    keys: Sequence[int],
    bits: dict[str, Any],
    *,
    rounds: int = 3,
    chunk: int = 20_000,
) -> dict[str, float]:
    """Microseconds per request of each policy, fairly on a busy machine.

    CPU time of this process (not wall time: a busy machine's other processes do not
    count), with the policies in lockstep, one chunk of requests each in turn, so that
    they share the same cache and frequency conditions; each chunk's time is the best of
    ``rounds`` passes with fresh policies.
    """
    n = len(keys)
    spans = [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]
    best = {name: [float("inf")] * len(spans) for name in names}
    for _ in range(rounds):
        runners = {name: _runner(name, k, keys, bits) for name in names}
        for c, (lo, hi) in enumerate(spans):
            for name, run in runners.items():
                start = time.process_time()
                run(lo, hi)
                best[name][c] = min(best[name][c], time.process_time() - start)
    return {name: sum(times) / n * 1e6 for name, times in best.items()}


def run_speed(args: argparse.Namespace) -> int:
    n = args.requests or (200_000 if args.quick else 1_000_000)
    universe = n // 10
    keys = zipf_trace(n, universe, alpha=0.9, seed=0)
    names = _policies(args.policies)
    if ROBUST not in names or "lru" not in names:
        names = [*names, *(p for p in ("lru", ROBUST) if p not in names)]
    results: dict[str, dict[str, float]] = {}
    for k in (100, 10_000):
        # Realistic bits: oracle bits with 10% flips; predictions with sigma = 10.
        bits: dict[str, Any] = {
            "none": [None] * n,
            "discard": flip(discard_bits(keys, k), 0.1, seed=1),
            "phase": flip(phase_bits(keys, k), 0.1, seed=2),
            "arrivals": noisy_next_arrivals(keys, 10.0, seed=3),
        }
        results[f"k={k}"] = time_policies(names, k, keys, bits, rounds=args.rounds)
    print(
        f"{n:,} Zipf(0.9) requests over {universe:,} keys; CPU µs per request, best of "
        f"{args.rounds} interleaved rounds; {machine()}"
    )
    rows = [[name, *(f"{results[c][name]:.2f}" for c in results)] for name in names]
    print(_table(["policy", *(f"µs/req {c}" for c in results)], rows))
    targets: dict[str, dict[str, Any]] = {}
    for case, times in results.items():
        ratio = times[ROBUST] / times["lru"]
        targets[f"{ROBUST} / lru time, {case}"] = {
            "value": round(ratio, 3),
            "target": SPEED_TARGET,
            "met": ratio <= SPEED_TARGET,
        }
    for label, t in targets.items():
        verdict = "met" if t["met"] else "NOT met"
        print(f"{label}: {t['value']:.2f}x (target <= {SPEED_TARGET}x: {verdict})")
    if args.json:
        line = {
            "bench": "scheduler.speed",
            "machine": machine(),
            "results": {c: {p: round(v, 3) for p, v in r.items()} for c, r in results.items()},
            "targets": targets,
        }
        print(json.dumps(line))
    return 0


WORKLOAD_POLICIES = ("lru", "gds", "gdsf", "gds-bits", "robust-gds-bits", "mark0", ROBUST)
WORKLOAD_BITS = ("none", "hints", "oracle", "learned", "learned+hints")


def workload_rows(
    config: WorkloadConfig, budget: int, policies: Sequence[str] = WORKLOAD_POLICIES
) -> dict[str, SimResult]:
    """Each sized policy under each bit source on the synthetic workload."""
    reqs = generate(config)
    keys = [r.key for r in reqs]
    sizes = [r.size for r in reqs]
    costs = [r.cost for r in reqs]
    mean_size = sum(sizes) / len(sizes)
    streams: dict[str, list[int | None]] = {
        "none": [None] * len(reqs),
        # The client's hint where it sent one, "keep" elsewhere.
        "hints": [r.hint or 0 for r in reqs],
        "oracle": list(discard_bits(keys, budget, sizes=sizes)),
    }
    for label, hints in (("learned", False), ("learned+hints", True)):
        predictor = BitPredictor(
            LearnedConfig(kind="discard", k=max(2, int(budget / mean_size)), budget=budget)
        )
        streams[label] = [
            predictor.bit(
                r.key,
                size=r.size,
                cost=r.cost,
                item_kind=r.kind,
                tenant=r.tenant,
                hint=r.hint if hints else None,
            )
            for r in reqs
        ]
    out: dict[str, SimResult] = {}
    for name in policies:
        sources = WORKLOAD_BITS if policy_info(name).bit_kind == "discard" else ("none",)
        for source in sources:
            policy = make_policy(name, budget)
            label = name if source == "none" else f"{name} [{source}]"
            out[label] = simulate(policy, keys, sizes=sizes, costs=costs, bits=streams[source])
    return out


def run_workload(args: argparse.Namespace) -> int:
    config = WorkloadConfig(requests=args.requests or (50_000 if args.quick else 200_000))
    budget = int(args.budget_mib * MIB)
    rows_by = workload_rows(config, budget, _sized(args.policies))
    base = rows_by.get("lru")
    print(
        f"synthetic LLM-memory workload: {config.requests:,} requests, {config.tenants} tenants, "
        f"budget {args.budget_mib:g} MiB"
    )
    rows = []
    for label, r in rows_by.items():
        rel = f"{r.cost_misses / base.cost_misses:.3f}" if base and base.cost_misses else "-"
        rows.append(
            [
                label,
                f"{r.misses:,}",
                f"{r.byte_miss_ratio:.4f}",
                f"{r.cost_misses:,.0f}",
                rel,
            ]
        )
    header = ["policy [bits]", "misses", "byte miss ratio", "cost-weighted misses", "vs lru"]
    print(_table(header, rows))
    if args.json:
        results = {
            label: {
                "misses": r.misses,
                "byte_misses": r.byte_misses,
                "cost_misses": round(r.cost_misses, 1),
            }
            for label, r in rows_by.items()
        }
        print(json.dumps({"bench": "scheduler.workload", "machine": machine(), "results": results}))
    return 0


def _sized(arg: str | None) -> list[str]:
    if not arg:
        return list(WORKLOAD_POLICIES)
    names = _policies(arg)
    for n in names:
        if not policy_info(n).sized or n == "opt":
            raise ValueError(f"policy {n!r} is unit-size only; the workload is sized")
    return names


EXAMPLES = """examples:
  python -m scheduler.bench --traces ../shared/traces/brightkite --k 10
  python -m scheduler.bench --traces '../shared/traces/citibike/*.gz' --k 100 --bits learned
  python -m scheduler.bench --traces ../shared/traces/brightkite --k 10 --flip 0.1 --seeds 5
  python -m scheduler.bench --traces ../shared/traces/brightkite --k 10 --false-keep 0.1 \\
      --policies mark0,robust-mark0 --json
  python -m scheduler.bench --speed --quick --json
  python -m scheduler.bench --workload --quick
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m scheduler.bench",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--traces", metavar="GLOB", help="gzip traces (one key per line): a glob or a folder"
    )
    p.add_argument("--k", type=int, metavar="K", help="cache size in pages")
    p.add_argument(
        "--policies",
        metavar="A,B,...",
        help=f"comma-separated policy names (default: all). Known: {', '.join(POLICY_NAMES)}",
    )
    p.add_argument(
        "--bits",
        default="oracle",
        choices=["none", "oracle", "oracle-discard", "oracle-phase", "learned"],
        help="where prediction bits come from: oracle = each policy its own kind "
        "(discard or phase) from the future, for evaluation only; oracle-discard / "
        "oracle-phase = only that kind; learned = the online predictor (never sees the "
        "future); none = no bits (default: %(default)s)",
    )
    p.add_argument(
        "--flip", type=float, metavar="P", default=0.0, help="flip each oracle bit with prob. P"
    )
    p.add_argument(
        "--false-evict",
        type=float,
        metavar="P",
        default=0.0,
        help="turn each 'keep' bit into 'evict' w.p. P",
    )
    p.add_argument(
        "--false-keep",
        type=float,
        metavar="P",
        default=0.0,
        help="turn each 'evict' bit into 'keep' w.p. P",
    )
    p.add_argument(
        "--sigma",
        type=float,
        metavar="S",
        default=0.0,
        help="LogNormal(0, S) noise on next-arrival predictions (ftp, *marker); when > 0 "
        "the oracle bits are derived from those noisy predictions too",
    )
    p.add_argument(
        "--seeds", type=int, metavar="N", default=1, help="runs with different seeds (mean)"
    )
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    p.add_argument("--speed", action="store_true", help="time each policy (µs per request)")
    p.add_argument("--workload", action="store_true", help="the synthetic sized workload")
    p.add_argument(
        "--budget-mib", type=float, metavar="MIB", default=32.0, help="workload cache budget"
    )
    p.add_argument("--quick", action="store_true", help="smaller synthetic traces")
    p.add_argument(
        "--rounds", type=int, metavar="N", default=3, help="speed: passes (best chunk time kept)"
    )
    p.add_argument(
        "--requests",
        type=int,
        metavar="N",
        help="synthetic trace length (speed: 1M, quick 200k; workload)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.speed:
            return run_speed(args)
        if args.workload:
            return run_workload(args)
        return run_traces(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
