"""memosctl top: a live view of the tiers, the caches' hit rates and the jobs.

One snapshot is four calls: MemCubeService.Stats (the caller's tenant's cubes by kind and
state), ActivationService.Stats (the KV levels, daemon-wide), SchedulerService.Stats (the
tier manager's activated set and the engine's LoRA slots) and SchedulerService.ListJobs.
``--once`` prints one snapshot, ``--json`` one JSON document; otherwise it refreshes every
``--interval`` seconds until Ctrl-C.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from google.protobuf.json_format import MessageToDict
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from memos.cli import output
from memos.cli.exits import reports_errors
from memos.cli.options import Addr, Json, Tenant, Token, connect
from memos.client import JobsClient, MemosClient
from memos.client_activation import ActivationClient
from memos.errors import MemosError
from memos.v1 import scheduler_pb2 as spb
from memos.v1 import scheduler_pb2_grpc as spb_grpc


def fetch_tier_stats(client: MemosClient) -> spb.TierStatsResponse:
    """SchedulerService.Stats on ``client``'s channel (the managed caches)."""
    stub = spb_grpc.SchedulerServiceStub(client.channel)  # type: ignore[no-untyped-call]
    response: spb.TierStatsResponse = client.call(stub, "Stats", spb.TierStatsRequest())
    return response


def snapshot(client: MemosClient, history: int = 3) -> dict[str, Any]:
    """Everything ``top`` shows, as plain data (the --json document)."""
    cubes = client.stats()
    doc: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(),
        "addr": client.addr,
        "plaintext": {
            "cubes": cubes.cubes,
            "by_kind": cubes.by_kind,
            "by_state": cubes.by_state,
            "size_bytes": cubes.size_bytes,
            "versions": cubes.versions,
        },
    }
    try:
        kv = ActivationClient(client).stats()
        doc["activation"] = {
            "lookups": kv.lookups,
            "lookup_keys": kv.lookup_keys,
            "lookup_hits": kv.lookup_hits,
            "pinned_chunks": kv.pinned_chunks,
            "levels": [
                {
                    "name": lv.name,
                    "kind": lv.kind,
                    "items": lv.items,
                    "used_bytes": lv.used_bytes,
                    "budget_bytes": lv.budget_bytes,
                    "hits": lv.hits,
                    "misses": lv.misses,
                    "evictions": lv.evictions,
                    "available": lv.available,
                }
                for lv in kv.levels
            ],
        }
    except MemosError as exc:  # a daemon without the activation tier
        doc["activation"] = {"error": str(exc)}
    tiers = fetch_tier_stats(client)
    doc["caches"] = [
        MessageToDict(
            c, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        for c in tiers.caches
    ]
    doc["tenants"] = tiers.tenants
    doc["coretrieval"] = {"tracked_sets": tiers.coretrieved_sets, "fused_sets": tiers.fused_sets}
    jobs = JobsClient(client).list_jobs(history=history)
    doc["jobs"] = [j.model_dump(mode="json") for j in jobs]
    return doc


def _ratio(hits: int, requests: int) -> str:
    return f"{hits / requests:.1%}" if requests else "-"


def render(doc: dict[str, Any]) -> Group:
    pt = doc["plaintext"]
    tiers = Table(title=f"tiers  ({doc['addr']}, {doc['at'][11:19]} UTC)", title_justify="left")
    for column in ("tier", "holds", "size / budget", "hit rate", "detail"):
        tiers.add_column(column)
    kinds = pt["by_kind"]
    states = ", ".join(f"{k} {v}" for k, v in sorted(pt["by_state"].items())) or "-"
    tiers.add_row(
        "plaintext", f"{kinds.get('plaintext', 0)} cubes", output.size(pt["size_bytes"]), "", states
    )
    tiers.add_row("activation cubes", f"{kinds.get('activation', 0)} cubes", "", "", "")
    tiers.add_row("adapters", f"{kinds.get('parameter', 0)} cubes", "", "", "")
    act = doc["activation"]
    for lv in act.get("levels", []):
        tiers.add_row(
            f"KV {lv['name']}",
            f"{lv['items']} chunks",
            f"{output.size(lv['used_bytes'])} / {output.size(lv['budget_bytes'])}",
            _ratio(lv["hits"], lv["hits"] + lv["misses"]),
            f"{lv['evictions']} evicted" + ("" if lv["available"] else ", [red]unavailable[/]"),
        )
    if "lookups" in act:
        tiers.add_row(
            "KV lookups",
            f"{act['lookups']} calls",
            "",
            _ratio(act["lookup_hits"], act["lookup_keys"]),
            f"{act['pinned_chunks']} chunks pinned",
        )
    caches = Table(title="managed caches", title_justify="left")
    for column in ("cache", "policy", "used / budget", "residents", "hit rate", "detail"):
        caches.add_column(column)
    for c in doc["caches"]:
        requests, hits = int(c["requests"]), int(c["hits"])
        labelled = int(c["labelled"])
        errors = (
            f"bit errors: {int(c['false_evicts']) / labelled:.1%} false evict, "
            f"{int(c['false_keeps']) / labelled:.1%} false keep"
            if labelled
            else "no labels yet"
        )
        if c["unit"] == "tokens":
            did = (
                f"promoted {c['promoted']}, demoted {c['demoted']}, "
                f"prefilled {c['prefilled_tokens']} tokens"
            )
        else:
            did = f"{c['loads']} loads, {c['unloads']} unloads"
        caches.add_row(
            str(c["name"]),
            str(c["policy"]),
            f"{c['used']} / {c['budget']} {c['unit']}",
            str(c["residents"]),
            f"{_ratio(hits, requests)} of {requests}",
            f"{did}; {errors}",
        )
    co = doc["coretrieval"]
    summary = Text(
        f"{doc['tenants']} tenants; co-retrieved sets tracked {co['tracked_sets']}, "
        f"fused {co['fused_sets']}"
    )
    jobs = Table(title="jobs", title_justify="left")
    for column in ("job", "every", "last run", "took", "result"):
        jobs.add_column(column)
    for j in doc["jobs"]:
        last = j["runs"][-1] if j["runs"] else None
        result = (
            ""
            if last is None
            else (last["detail"] if last["ok"] else f"[red]failed[/]: {last['detail']}")
        )
        jobs.add_row(
            j["name"],
            f"{j['interval_s']:g}s",
            last["started_at"][11:19] if last else "never",
            f"{last['seconds']:.2f}s" if last else "",
            result,
        )
    return Group(tiers, caches, summary, jobs)


@reports_errors
def top(
    *,
    interval: Annotated[
        float, typer.Option("--interval", "-n", min=0.2, help="Seconds between refreshes.")
    ] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """A live view of the tiers, the caches' hit rates and the jobs (Ctrl-C to stop)."""
    with connect(addr, token, tenant) as client:
        if json_output:
            output.emit_json(snapshot(client))
            return
        console = output.stdout()
        if once:
            console.print(render(snapshot(client)))
            return
        try:
            with Live(render(snapshot(client)), console=console, screen=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(render(snapshot(client)))
        except KeyboardInterrupt:
            return
