"""memosctl jobs (ls, run NAME) and memosctl explain ID."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from memos.cli import output
from memos.cli.exits import reports_errors
from memos.cli.options import Addr, Json, Tenant, Token, connect
from memos.client import JobInfo, JobRunInfo, JobsClient

jobs_app = typer.Typer(
    help="The daemon's background jobs: expire, fuse, migrate, retrain, index, compact.",
    no_args_is_help=True,
)


@jobs_app.command("ls")
@reports_errors
def jobs_ls(
    *,
    history: Annotated[int, typer.Option("--history", help="Runs to show per job.")] = 3,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Every job with its interval, next run and latest runs."""
    with connect(addr, token, tenant) as client:
        jobs = JobsClient(client).list_jobs(history=history)
    if json_output:
        output.emit_json([j.model_dump(mode="json") for j in jobs])
        return
    output.stdout().print(_jobs_table(jobs))


def _jobs_table(jobs: list[JobInfo]) -> Table:
    table = Table(title="jobs")
    for column in ("job", "every", "next run", "last run", "took", "result"):
        table.add_column(column)
    for job in jobs:
        last = job.runs[-1] if job.runs else None
        table.add_row(
            job.name,
            f"{job.interval_s:g}s",
            f"{job.next_run_at:%H:%M:%S}" if job.next_run_at else "-",
            f"{last.started_at:%H:%M:%S}" if last else "never",
            f"{last.seconds:.2f}s" if last else "",
            _result(last) if last else job.description,
        )
    return table


def _result(run: JobRunInfo) -> str:
    return run.detail if run.ok else f"[red]failed[/]: {run.detail}"


@jobs_app.command("run")
@reports_errors
def jobs_run(
    *,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The job (see `jobs ls`).")],
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait.")] = 600.0,
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Run a job now and wait for it (needs an admin token); exits 1 if the run failed."""
    with connect(addr, token, tenant) as client:
        run = JobsClient(client).run_job(name, timeout=timeout)
    if json_output:
        output.emit_json(run.model_dump(mode="json"))
    else:
        output.stdout().print(f"{run.job}: {_result(run)} ({run.seconds:.2f}s)")
    if not run.ok:
        raise typer.Exit(1)


@reports_errors
def explain(
    *,
    cube_id: Annotated[str, typer.Argument(metavar="ID", help="Any cube of the tenant.")],
    addr: Addr = None,
    token: Token = None,
    tenant: Tenant = None,
    json_output: Json = False,
) -> None:
    """Why a cube is where it is: its tier, its accesses, its latest bit, the decision."""
    with connect(addr, token, tenant) as client:
        e = JobsClient(client).explain(cube_id)
    if json_output:
        doc = e.model_dump(mode="json", exclude={"cube"})
        doc["cube"] = output.cube_json(e.cube)
        output.emit_json(doc)
        return
    console = output.stdout()
    kv = f" (KV in {', '.join(e.activation_ids)})" if e.activation_ids else ""
    console.print(f"[bold]{e.cube.id}[/] lives in [bold]{e.tier}[/]{kv}")
    console.print(f"decision: {e.decision}")
    if e.policy:
        bit = "none yet" if e.latest_bit is None else f"{e.latest_bit} (from the {e.bit_source})"
        console.print(
            f"cache {e.cache}, policy {e.policy}, resident {'yes' if e.resident else 'no'}; "
            f"{e.accesses} reads, latest bit {bit}, ~{e.size_tokens} tokens"
        )
    if e.recent:
        table = Table(title="recent reads")
        for column in ("at", "op", "bit", "source", "hit"):
            table.add_column(column)
        for a in e.recent:
            table.add_row(
                f"{a.at:%H:%M:%S.%f}"[:-3], a.op, str(a.bit), a.source, "yes" if a.hit else "no"
            )
        console.print(table)


def attach_commands(app: typer.Typer) -> None:
    """Add the ``jobs`` group, ``explain`` and ``top`` to memosctl."""
    from memos.cli.top import top

    app.add_typer(jobs_app, name="jobs")
    app.command("explain")(explain)
    app.command("top")(top)
