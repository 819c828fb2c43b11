"""memosctl reindex: re-embed the tenant's cubes after an embedding model or template change."""

from __future__ import annotations

from typing import Annotated

import typer

from memos.cli import output
from memos.cli.exits import reports_errors
from memos.cli.options import Addr, Json, Namespaces, Tenant, Token, connect


@reports_errors
def reindex(
    *,
    namespaces: Namespaces = None,
    everything: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Re-embed every version, not only those whose vector is stale.",
        ),
    ] = False,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Re-embed stored cubes (needs an admin token).

    A version is stale when another model made its vector than the daemon's, or when its
    namespace's templates (plaintext.embed_templates, plaintext.context_templates) now give
    another text than the one embedded. Versions keep their numbers; each batch is committed
    as it is done, so an interrupted run resumes where it stopped (--json: {"reindexed",
    "total"}).
    """
    done, total = 0, 0
    with connect(addr, token, tenant) as client, output.progress(quiet=json_output) as progress:
        task = progress.add_task("re-embedding", total=None)
        for done, total in client.reindex(namespaces or (), everything=everything):
            progress.update(task, completed=done, total=total)
    if json_output:
        output.emit_json({"reindexed": done, "total": total})
    elif total == 0:
        output.note("every vector is current: nothing to re-embed")
    else:
        output.note(f"re-embedded {done} of {total} versions")


def attach_commands(app: typer.Typer) -> None:
    app.command("reindex")(reindex)
