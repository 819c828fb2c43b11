"""memosctl: the command line of memosd (the console script runs ``main``)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from memos import __version__
from memos.cli import output
from memos.cli.exits import EXIT_CODES, EXIT_CODES_HELP, fail, reports_errors
from memos.cli.options import (
    Addr,
    After,
    Before,
    FilterMeta,
    FilterTags,
    Json,
    Namespaces,
    Tenant,
    Token,
    connect,
    parse_duration,
    parse_metadata,
    parse_tags,
    parse_time,
)
from memos.cli.transfer import export_cubes, import_cubes
from memos.client import SearchMode
from memos.cube import DEFAULT_NAMESPACE, Kind, State

app = typer.Typer(
    name="memosctl",
    help=(
        "Store, search and manage memories (MemCubes) in memosd.\n\n"
        "Connection flags default to $MEMOS_ADDR, $MEMOS_TOKEN and $MEMOS_TENANT. "
        "With --json every command prints exactly one JSON document on stdout (tail: one "
        "per event); errors go to stderr as one line.\n\n" + EXIT_CODES_HELP
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

PutTags = Annotated[
    list[str] | None,
    typer.Option("--tags", "--tag", "-t", help="Tags (repeatable, or comma-separated)."),
]
PutMeta = Annotated[
    list[str] | None, typer.Option("--meta", "-m", help="Metadata KEY=VALUE (repeatable).")
]
KindOpt = Annotated[Kind | None, typer.Option("--kind", help="Only cubes of this kind.")]
StatesOpt = Annotated[
    list[State] | None,
    typer.Option("--state", "-s", help="Only cubes in this state (repeatable). Default: active."),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"memosctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Store, search and manage memories (MemCubes) in memosd."""


def _read_text(text: str) -> str:
    if text != "-":
        return text
    data = sys.stdin.read()
    return data[:-1] if data.endswith("\n") else data


# ----------------------------------------------------------------------------- commands


@app.command()
@reports_errors
def health(
    *,
    service: Annotated[
        str, typer.Option("--service", help="A service name; empty: the daemon as a whole.")
    ] = "",
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Ask the daemon whether it serves (grpc.health.v1). Exits 10 unless SERVING."""
    with connect(addr, token, tenant) as client:
        status = client.health(service)
    if json_output:
        output.emit_json({"addr": client.addr, "status": status})
    else:
        style = "green" if status == "SERVING" else "red"
        output.stdout().print(f"memosd at {client.addr}: [{style}]{status}[/]")
    if status != "SERVING":
        raise typer.Exit(EXIT_CODES["UNAVAILABLE"])


@app.command()
@reports_errors
def put(
    *,
    text: Annotated[str, typer.Argument(help="The text to remember, or - to read it from stdin.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = DEFAULT_NAMESPACE,
    tags: PutTags = None,
    meta: PutMeta = None,
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="Expire after this long: seconds, or 30m, 12h, 7d.")
    ] = None,
    pinned: Annotated[bool, typer.Option("--pinned", help="Never evict or expire it.")] = False,
    priority: Annotated[int, typer.Option("--priority")] = 0,
    source: Annotated[
        str | None, typer.Option("--source", help="Who writes it: an agent, user or service.")
    ] = None,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Store a memory; prints the new cube (--json: the cube, with its id)."""
    body = _read_text(text)
    ttl_seconds = parse_duration(ttl) if ttl is not None else 0
    with connect(addr, token, tenant) as client:
        cube = client.put(
            body,
            namespace=namespace,
            tags=parse_tags(tags),
            metadata=parse_metadata(meta),
            ttl_seconds=ttl_seconds,
            pinned=pinned,
            priority=priority,
            source=source,
        )
    if json_output:
        output.emit_json(output.cube_json(cube))
        return
    extra = f", tags {', '.join(cube.tags)}" if cube.tags else ""
    output.stdout().print(f"stored [bold]{cube.id}[/] in {cube.namespace}{extra}", markup=True)


@app.command()
@reports_errors
def get(
    *,
    cube_id: Annotated[str, typer.Argument(metavar="ID", help="The cube's id.")],
    version: Annotated[int, typer.Option("--version", "-v", help="0: the latest.")] = 0,
    embedding: Annotated[bool, typer.Option("--embedding", help="Include the vector.")] = False,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Show one cube (--json: the cube)."""
    with connect(addr, token, tenant) as client:
        cube = client.get(cube_id, version=version, include_embedding=embedding)
    if json_output:
        output.emit_json(output.cube_json(cube))
    else:
        output.stdout().print(output.cube_panel(cube))


@app.command()
@reports_errors
def search(
    *,
    query: Annotated[str, typer.Argument(help="What to look for, in plain words (- for stdin).")],
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="How many results.")] = 10,
    namespaces: Namespaces = None,
    tags: FilterTags = None,
    meta: FilterMeta = None,
    kind: KindOpt = None,
    states: StatesOpt = None,
    after: After = None,
    before: Before = None,
    mode: Annotated[
        SearchMode | None,
        typer.Option(
            "--mode",
            help="hybrid (BM25 and embeddings fused), lexical (BM25) or dense (embeddings). "
            "Default: the daemon's (hybrid unless configured).",
        ),
    ] = None,
    exact: Annotated[
        bool, typer.Option("--exact", help="Brute force instead of the ANN index.")
    ] = False,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Search by words and meaning, best first (--json: {"results": [{"id", "score", ...}]})."""
    with connect(addr, token, tenant) as client:
        results = client.search(
            _read_text(query),
            k=k,
            namespaces=namespaces or (),
            tags=parse_tags(tags),
            metadata=parse_metadata(meta),
            kind=kind,
            states=states or (),
            created_after=parse_time(after, "--after"),
            created_before=parse_time(before, "--before"),
            mode=mode,
            exact=exact,
        )
    if json_output:
        output.emit_json({"results": [output.result_json(r) for r in results]})
    elif not results:
        output.note("no matching cubes")
    else:
        table = output.cubes_table([r.cube for r in results], scores=[r.score for r in results])
        output.stdout().print(table)


@app.command()
@reports_errors
def ls(
    *,
    namespaces: Namespaces = None,
    tags: FilterTags = None,
    meta: FilterMeta = None,
    kind: KindOpt = None,
    states: StatesOpt = None,
    after: After = None,
    before: Before = None,
    page_size: Annotated[int, typer.Option("--page-size", min=1)] = 50,
    page_token: Annotated[
        str, typer.Option("--page-token", help="Continue where a previous ls stopped.")
    ] = "",
    all_pages: Annotated[bool, typer.Option("--all", help="Follow every page.")] = False,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """List cubes, oldest first, a page at a time (--json: {"cubes", "next_page_token"})."""
    filters: dict[str, Any] = {
        "namespaces": namespaces or (),
        "tags": parse_tags(tags),
        "metadata": parse_metadata(meta),
        "kind": kind,
        "states": states or (),
        "created_after": parse_time(after, "--after"),
        "created_before": parse_time(before, "--before"),
    }
    with connect(addr, token, tenant) as client:
        page = client.list_page(**filters, page_size=page_size, page_token=page_token)
        cubes = list(page.cubes)
        next_token = page.next_page_token
        while all_pages and next_token:
            page = client.list_page(**filters, page_size=page_size, page_token=next_token)
            cubes.extend(page.cubes)
            next_token = page.next_page_token
    if json_output:
        output.emit_json(
            {"cubes": [output.cube_json(c) for c in cubes], "next_page_token": next_token or None}
        )
        return
    if cubes:
        output.stdout().print(output.cubes_table(cubes))
    else:
        output.note("no cubes")
    if next_token:
        output.note(f"more: memosctl ls --page-token {next_token} (or --all)")


@app.command()
@reports_errors
def update(
    *,
    cube_id: Annotated[str, typer.Argument(metavar="ID", help="The cube's id.")],
    text: Annotated[
        str | None, typer.Option("--text", help="New text (- for stdin); re-embedded.")
    ] = None,
    tags: Annotated[
        list[str] | None, typer.Option("--tags", "-t", help="Replace the tags (comma-separated).")
    ] = None,
    add_tags: Annotated[list[str] | None, typer.Option("--add-tag", help="Add a tag.")] = None,
    remove_tags: Annotated[
        list[str] | None, typer.Option("--remove-tag", help="Remove a tag.")
    ] = None,
    clear_tags: Annotated[bool, typer.Option("--clear-tags", help="Remove every tag.")] = False,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", "-m", help="Set metadata KEY=VALUE.")
    ] = None,
    unset_meta: Annotated[
        list[str] | None, typer.Option("--unset-meta", help="Remove metadata KEY.")
    ] = None,
    replace_meta: Annotated[
        bool, typer.Option("--replace-meta", help="--meta replaces all metadata.")
    ] = False,
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="Expire this long from now; 0 never expires.")
    ] = None,
    pinned: Annotated[bool | None, typer.Option("--pin/--unpin")] = None,
    priority: Annotated[int | None, typer.Option("--priority")] = None,
    expected_version: Annotated[
        int,
        typer.Option("--expected-version", help="Fail (exit 8) unless this is the latest."),
    ] = 0,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Write a new version of a cube; the old one stays in its history."""
    set_meta = parse_metadata(meta)
    edits_tags = bool(add_tags or remove_tags)
    edits_meta = bool(unset_meta) or (bool(set_meta) and not replace_meta)
    new_tags: list[str] | None = [] if clear_tags else (parse_tags(tags) if tags else None)
    new_meta: dict[str, str] | None = set_meta if replace_meta else None
    changes = [text, new_tags, new_meta, ttl, pinned, priority]
    if all(c is None for c in changes) and not (edits_tags or edits_meta):
        raise typer.BadParameter("nothing to update: give --text, --tags, --meta, --ttl, ...")
    with connect(addr, token, tenant) as client:
        expected = expected_version
        if edits_tags or edits_meta:
            # A read-modify-write, made safe by updating only the version that was read.
            current = client.get(cube_id)
            if expected and expected != current.version:
                fail(
                    f"error (failed precondition): {cube_id} is at version {current.version}, "
                    f"not {expected}",
                    EXIT_CODES["FAILED_PRECONDITION"],
                )
            expected = current.version
            if edits_tags:
                base = new_tags if new_tags is not None else list(current.tags)
                drop = set(parse_tags(remove_tags))
                new_tags = [t for t in base if t not in drop]
                new_tags += [t for t in parse_tags(add_tags) if t not in new_tags]
            if edits_meta:
                merged = dict(current.metadata) if new_meta is None else new_meta
                merged.update(set_meta)
                for key in unset_meta or ():
                    merged.pop(key, None)
                new_meta = merged
        cube = client.update(
            cube_id,
            text=_read_text(text) if text is not None else None,
            tags=new_tags,
            metadata=new_meta,
            ttl_seconds=parse_duration(ttl) if ttl is not None else None,
            pinned=pinned,
            priority=priority,
            expected_version=expected,
        )
    if json_output:
        output.emit_json(output.cube_json(cube))
    else:
        output.stdout().print(output.cube_panel(cube, title=f"{cube.id} v{cube.version}"))


@app.command()
@reports_errors
def history(
    *,
    cube_id: Annotated[str, typer.Argument(metavar="ID", help="The cube's id.")],
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Every version of a cube, oldest first (--json: {"id", "versions": [...]})."""
    with connect(addr, token, tenant) as client:
        versions = client.history(cube_id)
    if json_output:
        output.emit_json({"id": cube_id, "versions": [output.cube_json(c) for c in versions]})
    else:
        output.stdout().print(output.history_table(versions))


@app.command()
@reports_errors
def rm(
    *,
    cube_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="The cubes' ids.")],
    expected_version: Annotated[
        int, typer.Option("--expected-version", help="Fail (exit 8) unless this is the latest.")
    ] = 0,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Delete cubes: each becomes a tombstone (--json: {"deleted": [{"id", "version"}]})."""
    deleted = []
    with connect(addr, token, tenant) as client:
        for cube_id in cube_ids:
            deleted.append(client.delete(cube_id, expected_version=expected_version))
    if json_output:
        output.emit_json({"deleted": [d.model_dump() for d in deleted]})
    else:
        console = output.stdout()
        for d in deleted:
            console.print(f"deleted {d.id} (tombstone v{d.version})")


@app.command()
@reports_errors
def stats(
    *,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Counts and sizes of the tenant's cubes, and the state of the search index."""
    with connect(addr, token, tenant) as client:
        result = client.stats()
    if json_output:
        output.emit_json(result.model_dump(mode="json"))
    else:
        output.stdout().print(output.stats_panel(result))


@app.command()
@reports_errors
def tail(
    *,
    namespaces: Namespaces = None,
    count: Annotated[
        int, typer.Option("--count", "-c", min=0, help="Stop after this many events; 0: never.")
    ] = 0,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Follow the tenant's changes until Ctrl-C (--json: one JSON object per event).

    Exits 0 on Ctrl-C or after --count events, 10 when the daemon ends the stream.
    """
    seen = 0
    with connect(addr, token, tenant) as client, client.watch(namespaces or ()) as stream:
        if not json_output:
            output.note(f"following changes at {client.addr} (Ctrl-C to stop)")
        console = output.stdout()
        try:
            for event in stream:
                if json_output:
                    output.emit_json(output.event_json(event))
                else:
                    console.print(output.event_line(event))
                sys.stdout.flush()
                seen += 1
                if count and seen >= count:
                    return
        except KeyboardInterrupt:
            return
    fail(
        f"error (unavailable): memosd at {client.addr} ended the watch (is it shutting down?)",
        EXIT_CODES["UNAVAILABLE"],
    )


@contextlib.contextmanager
def _open_out(path: str) -> Iterator[TextIO]:
    """stdout for "-"; else a file that appears under its name only once complete."""
    if path == "-":
        yield sys.stdout
        return
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="\n") as fh:
            yield fh
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)


@app.command("export")
@reports_errors
def export(
    *,
    path: Annotated[
        str, typer.Argument(help="A .jsonl file to write, or - for stdout.", show_default=True)
    ] = "-",
    namespaces: Namespaces = None,
    states: StatesOpt = None,
    embeddings: Annotated[
        bool,
        typer.Option(
            "--embeddings/--no-embeddings",
            help="Include each cube's vector, so an import need not embed again.",
        ),
    ] = True,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Write the tenant's cubes as JSON Lines, one cube a line (all namespaces by default).

    The summary goes to stdout when writing a file, to stderr when the cubes go to stdout.
    """
    chosen = states or [State.ACTIVE]
    with connect(addr, token, tenant) as client:
        total: int | None = None
        if not namespaces:
            by_state = client.stats().by_state
            total = sum(by_state.get(str(s), 0) for s in chosen)
        with output.progress() as progress, _open_out(path) as out:
            task = progress.add_task("exporting", total=total)
            summary = export_cubes(
                client,
                out,
                namespaces=namespaces or (),
                states=chosen,
                embeddings=embeddings,
                on_cube=lambda: progress.advance(task),
            )
    doc = {
        "exported": summary.cubes,
        "with_embedding": summary.with_embedding,
        "states": [str(s) for s in chosen],
        "path": None if path == "-" else path,
    }
    message = f"exported {summary.cubes} cubes ({summary.with_embedding} with embeddings)"
    if path == "-":
        typer.echo(output.json_text(doc) if json_output else message, err=True)
    elif json_output:
        output.emit_json(doc)
    else:
        output.stdout().print(f"{message} to {path}")


@app.command("import")
@reports_errors
def import_(
    *,
    path: Annotated[str, typer.Argument(help="A .jsonl file from `memosctl export`, or -.")],
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=1000, help="Cubes per PutBatch call.")
    ] = 256,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Put every cube in this namespace.")
    ] = None,
    reembed: Annotated[
        bool, typer.Option("--reembed", help="Ignore the file's embeddings; embed the text.")
    ] = False,
    id_map: Annotated[
        Path | None,
        typer.Option("--id-map", help='Write one {"old", "new"} id pair a line to this file.'),
    ] = None,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Put the cubes of a JSON Lines file into the tenant, in batches.

    Kept: text, namespace, tags, metadata, the time left to live, pinned, priority, source,
    and the embedding when it comes from the daemon's own model (else the text is embedded
    again). The daemon assigns NEW ids, versions and creation times (history is not carried
    over); --id-map records old -> new. Tombstones and expired cubes are skipped. Lines may
    also be bare inputs such as {"text": "...", "tags": ["ops"]}.
    """
    source = Path(path)
    total = None if path == "-" else source.stat().st_size
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(connect(addr, token, tenant))
        lines: TextIO = (
            sys.stdin if path == "-" else stack.enter_context(source.open(encoding="utf-8"))
        )
        mapping = (
            stack.enter_context(id_map.open("w", encoding="utf-8")) if id_map is not None else None
        )
        progress = stack.enter_context(output.progress())
        task = progress.add_task("importing", total=total)
        summary = import_cubes(
            client,
            lines,
            batch_size=batch_size,
            namespace=namespace,
            reembed=reembed,
            id_map=mapping,
            on_line=lambda n: progress.advance(task, n),
        )
    if json_output:
        output.emit_json(
            {
                "imported": summary.imported,
                "lines": summary.lines,
                "batches": summary.batches,
                "reembedded": summary.reembedded,
                "skipped": summary.skipped,
                "new_ids": summary.imported,
                "id_map": str(id_map) if id_map is not None else None,
            }
        )
        return
    console = output.stdout()
    console.print(
        f"imported {summary.imported} of {summary.lines} cubes in {summary.batches} batches "
        f"({summary.reembedded} embedded again)"
    )
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(summary.skipped.items()))
    if skipped:
        console.print(f"skipped: {skipped}")
    where = f"written to {id_map}" if id_map is not None else "not kept: use --id-map FILE"
    console.print(f"{summary.imported} new ids assigned by the daemon; old -> new mapping {where}")


from memos.cli import adapters  # noqa: E402  (here: the parameter tier owns only these lines)

app.add_typer(adapters.app, name="adapters")


from memos.cli.migrate import attach_commands  # noqa: E402 - after every command of this module

attach_commands(app)

from memos.cli.jobs import attach_commands as attach_jobs  # noqa: E402

attach_jobs(app)

from memos.cli.reindex import attach_commands as attach_reindex  # noqa: E402

attach_reindex(app)


def main() -> None:
    app(prog_name="memosctl")
