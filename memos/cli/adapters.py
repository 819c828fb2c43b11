"""``memosctl adapters``: LoRA adapters in memosd (register, list, show, delete, merge, train)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import TextColumn
from rich.table import Table
from rich.text import Text

from memos.cli import output
from memos.cli.exits import fail, reports_errors
from memos.cli.options import Addr, Json, Tenant, Token, connect, parse_metadata
from memos.client_adapters import (
    AdapterClient,
    AdapterInfo,
    MergeInput,
    Trained,
    TrainProgress,
    TrainStarted,
)

app = typer.Typer(
    help=(
        "LoRA adapters: each version is content-addressed, validated against the daemon's "
        "base model, and also a cube of kind parameter (memosctl ls --kind parameter)."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)

#: The exit code of a run stopped by Ctrl-C (the shell's 128 + SIGINT).
INTERRUPTED = 130
VersionOpt = Annotated[int, typer.Option("--version", "-v", help="0: the latest.", min=0)]
_SOURCE = re.compile(r"^(?P<name>[^=@]+?)(?:@v(?P<version>\d+))?(?:=(?P<weight>[^=]+))?$")


def adapter_json(adapter: AdapterInfo) -> dict[str, Any]:
    return adapter.model_dump(mode="json")


def adapters_table(adapters: Iterable[AdapterInfo]) -> Table:
    table = Table(header_style="bold")
    for column in ("name", "v", "id", "origin", "rank", "modules", "size", "created", "parents"):
        table.add_column(
            column,
            no_wrap=column != "parents",
            justify="right" if column in ("v", "rank", "modules", "size") else "left",
        )
    for a in adapters:
        table.add_row(
            Text(a.name),
            Text(str(a.version)),
            Text(a.id),
            Text(a.origin),
            Text(str(a.rank)),
            Text(str(a.modules)),
            Text(f"{a.size_bytes} B"),
            Text(output.when(a.created_at)),
            Text(", ".join(a.parent_ids) or "-"),
        )
    return table


def adapter_panel_rows(a: AdapterInfo) -> list[tuple[str, str]]:
    rows = [
        ("ref", a.ref),
        ("id (cube)", a.id),
        ("origin", a.origin),
        ("rank", f"{a.rank} (alpha {a.alpha:g})"),
        ("targets", ", ".join(a.target_modules)),
        ("modules", str(a.modules)),
        ("dtype", a.dtype),
        ("size", f"{a.size_bytes} B"),
        ("digest", a.digest),
        ("path", a.path),
        ("base model", a.base_model),
        ("created", output.when(a.created_at)),
        ("parents", ", ".join(a.parent_ids) or "-"),
    ]
    rows.extend((f"meta.{k}", v) for k, v in sorted(a.metadata.items()))
    return rows


def _print_adapter(a: AdapterInfo) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column()
    for key, value in adapter_panel_rows(a):
        grid.add_row(key, Text(value))
    output.stdout().print(grid)


def parse_source(value: str) -> MergeInput:
    """``NAME[@vN][=WEIGHT]`` (weight 1, latest version by default)."""
    match = _SOURCE.match(value.strip())
    if match is None:
        raise typer.BadParameter(
            f"expected NAME[@vN][=WEIGHT], e.g. support@v2=0.5, got {value!r}",
            param_hint="SOURCE",
        )
    try:
        weight = float(match["weight"]) if match["weight"] is not None else 1.0
    except ValueError:
        raise typer.BadParameter(
            f"the weight of {value!r} is not a number", param_hint="SOURCE"
        ) from None
    return MergeInput(name=match["name"], weight=weight, version=int(match["version"] or 0))


@app.command("ls")
@reports_errors
def ls(
    *,
    all_versions: Annotated[
        bool, typer.Option("--all", help="Every version, not only the latest of each name.")
    ] = False,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """List the tenant's adapters (--json: {"adapters": [...]})."""
    with connect(addr, token, tenant) as client:
        adapters = AdapterClient(client).list(all_versions=all_versions)
    if json_output:
        output.emit_json({"adapters": [adapter_json(a) for a in adapters]})
    elif not adapters:
        output.note("no adapters")
    else:
        output.stdout().print(adapters_table(adapters))


@app.command("get")
@reports_errors
def get(
    *,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The adapter's name.")],
    version: VersionOpt = 0,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Show one version of an adapter (--json: the adapter)."""
    with connect(addr, token, tenant) as client:
        adapter = AdapterClient(client).get(name, version=version)
    if json_output:
        output.emit_json(adapter_json(adapter))
    else:
        _print_adapter(adapter)


@app.command("register")
@reports_errors
def register(
    *,
    path: Annotated[
        str,
        typer.Argument(
            metavar="PATH", help="A directory with adapter_config.json and the safetensors."
        ),
    ],
    name: Annotated[str, typer.Option("--name", help="The adapter's name.")],
    meta: Annotated[
        list[str] | None, typer.Option("--meta", "-m", help="Metadata KEY=VALUE (repeatable).")
    ] = None,
    server_path: Annotated[
        bool,
        typer.Option(
            "--server-path",
            help="PATH is on the daemon's host: the daemon reads it (admin tokens only).",
        ),
    ] = False,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Upload an adapter (a new version when its content changed; --json: {adapter, created})."""
    metadata = parse_metadata(meta)
    with connect(addr, token, tenant) as client:
        adapters = AdapterClient(client)
        if server_path:
            done = adapters.register_path(name, path, metadata=metadata)
        else:
            done = adapters.register(Path(path), name=name, metadata=metadata)
    if json_output:
        output.emit_json({"adapter": adapter_json(done.adapter), "created": done.created})
        return
    a = done.adapter
    what = "registered" if done.created else "unchanged, already"
    output.stdout().print(f"{what} [bold]{a.ref}[/] ({a.id}), rank {a.rank}, {a.modules} modules")


@app.command("rm")
@reports_errors
def rm(
    *,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The adapter's name.")],
    version: Annotated[int, typer.Option("--version", "-v", help="0: every version.", min=0)] = 0,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Delete an adapter's versions; their cubes become tombstones (--json: {"deleted"})."""
    with connect(addr, token, tenant) as client:
        deleted = AdapterClient(client).delete(name, version=version)
    if json_output:
        output.emit_json({"deleted": [adapter_json(a) for a in deleted]})
        return
    console = output.stdout()
    for a in deleted:
        console.print(f"deleted {a.ref} ({a.id})")


@app.command("merge")
@reports_errors
def merge(
    *,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The new adapter's name.")],
    sources: Annotated[
        list[str],
        typer.Argument(
            metavar="SOURCE...",
            help=r"NAME\[@vN]\[=WEIGHT], e.g. a=0.7 b@v2=0.3 (weight 1, latest by default).",
        ),
    ],
    method: Annotated[str, typer.Option("--method", help="linear or ties.")] = "linear",
    space: Annotated[
        str,
        typer.Option(
            "--space",
            help="factors (exact: rank = sum of ranks) or dense (truncated SVD to --rank).",
        ),
    ] = "factors",
    rank: Annotated[
        int, typer.Option("--rank", min=0, help="Dense merges: the rank (0: default).")
    ] = 0,
    density: Annotated[
        float | None, typer.Option("--density", help="TIES: the share of entries kept.")
    ] = None,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Merge adapters into a new one whose parents are the sources (--json: the result)."""
    inputs = [parse_source(s) for s in sources]
    with connect(addr, token, tenant) as client:
        merged = AdapterClient(client).merge(
            name, inputs, method=method, space=space, rank=rank, density=density
        )
    if json_output:
        output.emit_json(
            {
                "adapter": adapter_json(merged.adapter),
                "rank": merged.rank,
                "error": merged.error,
                "module_errors": merged.module_errors,
            }
        )
        return
    output.stdout().print(
        f"merged into [bold]{merged.adapter.ref}[/] ({merged.adapter.id}): {method} on "
        f"{space}, rank {merged.rank}, relative error {merged.error:.2e}"
    )


@app.command("train")
@reports_errors
def train(
    *,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The new adapter's name.")],
    memory_ids: Annotated[
        list[str], typer.Argument(metavar="ID...", help="Plaintext cubes to learn from.")
    ],
    steps: Annotated[int, typer.Option("--steps", min=0, help="0: the default (40).")] = 0,
    rank: Annotated[int, typer.Option("--rank", min=0, help="0: the default (8).")] = 0,
    alpha: Annotated[float, typer.Option("--alpha", min=0, help="0: the default (16).")] = 0.0,
    learning_rate: Annotated[
        float, typer.Option("--lr", min=0, help="0: the default (5e-3).")
    ] = 0.0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=0)] = 0,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=0, help="Per memory; 0: the default (256).")
    ] = 0,
    targets: Annotated[
        list[str] | None,
        typer.Option("--target", help="Target module (repeatable); default: every projection."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0)] = 0,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Fine-tune an adapter on memories; progress on stderr, Ctrl-C cancels the run.

    --json prints {"adapter", "losses", "tokens", "seconds"} at the end.
    """
    loss = TextColumn("loss {task.fields[loss]}")
    progress = output.progress("training {task.description}", loss)
    result: Trained | None = None
    with connect(addr, token, tenant) as client:
        stream = AdapterClient(client).train(
            name,
            memory_ids,
            rank=rank,
            alpha=alpha,
            target_modules=targets or (),
            steps=steps,
            learning_rate=learning_rate,
            batch_size=batch_size,
            max_tokens=max_tokens,
            seed=seed,
        )
        with progress, stream:
            task = progress.add_task(name, total=None, loss="-")
            try:
                for event in stream:
                    if isinstance(event, TrainStarted):
                        progress.update(task, total=event.steps)
                    elif isinstance(event, TrainProgress):
                        progress.update(task, completed=event.step, loss=f"{event.loss:.4f}")
                    else:
                        result = event
            except KeyboardInterrupt:
                stream.cancel()
                fail("training cancelled: nothing was registered", INTERRUPTED)
    if result is None:
        fail("the daemon ended the training run without a result")
    if json_output:
        output.emit_json(
            {
                "adapter": adapter_json(result.adapter),
                "losses": list(result.losses),
                "tokens": result.tokens,
                "seconds": result.seconds,
            }
        )
        return
    losses = result.losses
    output.stdout().print(
        f"trained [bold]{result.adapter.ref}[/] ({result.adapter.id}) on "
        f"{len(result.adapter.parent_ids)} memories: {len(losses)} steps, loss "
        f"{losses[0]:.4f} -> {losses[-1]:.4f} in {result.seconds:.1f} s"
    )
