"""memosctl migrate (between the plaintext and activation tiers) and memosctl kv (KV chunks)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from memos.cli import output
from memos.cli.exits import reports_errors
from memos.cli.options import Addr, Json, Tenant, Token, connect
from memos.client_activation import MIGRATE_TIMEOUT_S, ActivationClient, KvStats, Migrated


class Target(StrEnum):
    ACTIVATION = "activation"
    PLAINTEXT = "plaintext"


@reports_errors
def migrate(
    *,
    cube_id: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="A plaintext cube (or, with --to plaintext, its activation cube).",
        ),
    ],
    to: Annotated[
        Target,
        typer.Option(
            "--to",
            help="activation: prefill the text and store its KV cache; plaintext: drop it "
            "again (the plaintext cube is never changed).",
        ),
    ],
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="Who prefills: hf, the daemon's own model; vllm, the vLLM server at "
            "--engine-url (running MemCubeKVConnector against this daemon).",
        ),
    ] = "hf",
    engine_url: Annotated[
        str,
        typer.Option(
            "--engine-url",
            help="With --engine vllm: the vLLM OpenAI server's base URL, http://host:port.",
        ),
    ] = "",
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait: a CPU prefill takes a while.")
    ] = MIGRATE_TIMEOUT_S,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Move a memory between tiers (--json: the resulting cube and a `migration` summary).

    To activation needs a daemon with a model (engine.model_path), or --engine vllm with
    --engine-url; twice is harmless.
    """
    with connect(addr, token, tenant) as client:
        done = ActivationClient(client).migrate(
            cube_id, to=to.value, engine=engine, engine_url=engine_url, timeout=timeout
        )
    if json_output:
        doc = output.cube_json(done.cube)
        doc["migration"] = _summary(done)
        output.emit_json(doc)
        return
    console = output.stdout()
    console.print(output.cube_panel(done.cube))
    if to == Target.ACTIVATION:
        what = "created" if done.created else "already there"
        console.print(
            f"activation cube {done.cube.id} {what}: {done.prefilled_chunks} chunks prefilled, "
            f"{done.reused_chunks} reused"
        )
    else:
        archived = ", ".join(c.id for c in done.archived) or "none active"
        console.print(
            f"archived {archived}; dropped {done.dropped_chunks} stored chunk copies; "
            f"plaintext {done.cube.id} kept"
        )


def _summary(done: Migrated) -> dict[str, object]:
    return {
        "created": done.created,
        "prefilled_chunks": done.prefilled_chunks,
        "reused_chunks": done.reused_chunks,
        "dropped_chunks": done.dropped_chunks,
        "archived": [c.id for c in done.archived],
    }


kv_app = typer.Typer(
    help="The activation tier: KV-cache chunks in RAM, on disk and in Redis.",
    no_args_is_help=True,
)


@kv_app.command("stats")
@reports_errors
def kv_stats(
    *,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Chunk counters and each level's occupancy (daemon-wide), and the tenant's cache salt."""
    with connect(addr, token, tenant) as client:
        stats = ActivationClient(client).stats()
    if json_output:
        output.emit_json(stats.model_dump(mode="json"))
        return
    output.stdout().print(_stats_table(stats))
    output.stdout().print(
        f"lookups {stats.lookups} ({stats.lookup_hits} of {stats.lookup_keys} keys hit), "
        f"fetched {stats.fetched_chunks} chunks, stored {stats.stored_chunks}, "
        f"corrupt {stats.corrupt}, {stats.leases} leases pinning {stats.pinned_chunks}; "
        f"chunk tokens {stats.chunk_tokens}, model {stats.model_id or '(not loaded)'}, "
        f"cache salt {stats.cache_salt}"
    )


def _stats_table(stats: KvStats) -> Table:
    table = Table(title="activation levels")
    for column in ("level", "items", "used", "budget", "hits", "misses", "puts", "evictions"):
        table.add_column(column, justify="left" if column == "level" else "right")
    table.add_column("up")
    for lv in stats.levels:
        table.add_row(
            f"{lv.name} ({lv.kind})",
            str(lv.items),
            output.size(lv.used_bytes),
            output.size(lv.budget_bytes),
            str(lv.hits),
            str(lv.misses),
            str(lv.puts),
            str(lv.evictions),
            "yes" if lv.available else "[red]no[/]",
        )
    return table


def attach_commands(app: typer.Typer) -> None:
    """Add ``migrate`` and the ``kv`` group to memosctl."""
    app.command("migrate")(migrate)
    app.add_typer(kv_app, name="kv")
