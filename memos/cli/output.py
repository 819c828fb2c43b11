"""What memosctl prints: one JSON document with --json, Rich tables and panels without."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import typer
from rich.console import Console, Group
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from memos.client import ChangeEvent, SearchResult, Stats
from memos.cube import MemCube

TEXT_PREVIEW = 120


PIPE_WIDTH = 160


def stdout() -> Console:
    # Made per call, so a redirected sys.stdout (CliRunner, a pipe) is honoured. A pipe
    # gets wide lines rather than Rich's 80 columns, so a row stays one line for grep.
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=PIPE_WIDTH)
    return console


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def json_text(document: Any, *, indent: int | None = None) -> str:
    return json.dumps(document, ensure_ascii=False, indent=indent)


def emit_json(document: Any) -> None:
    """Print one JSON document on stdout (indented for a person, compact for a pipe)."""
    typer.echo(json_text(document, indent=2 if sys.stdout.isatty() else None))


def note(message: str) -> None:
    """A hint for a person, on stderr so that stdout stays data."""
    stderr().print(Text(message, style="dim"))


# --------------------------------------------------------------------------- JSON shapes


def cube_json(cube: MemCube) -> dict[str, Any]:
    """The cube as JSON, plus a top-level ``text`` for plaintext cubes (for ``jq .text``)."""
    doc = cube.model_dump(mode="json")
    doc["text"] = cube.text
    return doc


def result_json(result: SearchResult) -> dict[str, Any]:
    doc = cube_json(result.cube)
    return {"id": doc.pop("id"), "score": result.score, "text": doc.pop("text"), **doc}


def event_json(event: ChangeEvent) -> dict[str, Any]:
    doc = event.model_dump(mode="json", exclude={"cube"})
    doc["cube"] = cube_json(event.cube) if event.cube is not None else None
    return doc


# ----------------------------------------------------------------------------- for people


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def size(n: int) -> str:
    """A byte count for people: B, KiB, MiB or GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def preview(text: str, limit: int = TEXT_PREVIEW) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def cube_panel(cube: MemCube, *, title: str | None = None) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column()
    rows: list[tuple[str, str]] = [
        ("namespace", cube.namespace),
        ("kind", str(cube.kind)),
        ("state", str(cube.state)),
        ("version", str(cube.version)),
        ("tags", ", ".join(cube.tags) or "-"),
        ("created", when(cube.created_at)),
        ("updated", when(cube.updated_at)),
        ("expires", when(cube.expires_at) if cube.expires_at else "never"),
        ("pinned", "yes" if cube.pinned else "no"),
        ("priority", str(cube.priority)),
        ("size", f"{cube.size_bytes} B"),
        ("tenant", cube.tenant),
    ]
    if cube.source.writer or cube.source.session_id or cube.source.message_id:
        parts = [cube.source.writer, cube.source.session_id, cube.source.message_id]
        rows.append(("source", " / ".join(p or "-" for p in parts)))
    if cube.parent_ids:
        rows.append(("parents", ", ".join(cube.parent_ids)))
    rows.extend((f"meta.{k}", v) for k, v in sorted(cube.metadata.items()))
    if cube.plaintext is not None and cube.plaintext.embedding:
        dims = len(cube.plaintext.embedding)
        head = ", ".join(f"{x:.4f}" for x in cube.plaintext.embedding[:4])
        rows.append(("embedding", f"{cube.plaintext.embedding_model} [{dims}] {head}, …"))
    for key, value in rows:
        grid.add_row(key, Text(value))
    body: list[Any] = []
    if cube.plaintext is not None:
        body += [Text(cube.text), Text("")]
    body.append(grid)
    return Panel(Group(*body), title=Text(title or cube.id), title_align="left", expand=False)


def cubes_table(cubes: Iterable[MemCube], *, scores: Iterable[float] | None = None) -> Table:
    table = Table(show_lines=False, header_style="bold")
    if scores is not None:
        table.add_column("#", justify="right")
        table.add_column("score", justify="right")
    table.add_column("id", no_wrap=True)
    table.add_column("namespace", no_wrap=True)
    table.add_column("tags")
    table.add_column("v", justify="right")
    if scores is None:
        table.add_column("state")
        table.add_column("created", no_wrap=True)
    table.add_column("text", ratio=1)
    score_list = list(scores) if scores is not None else None
    for i, cube in enumerate(cubes):
        cells: list[Text] = []
        if score_list is not None:
            cells += [Text(str(i + 1)), Text(f"{score_list[i]:.3f}")]
        cells += [
            Text(cube.id),
            Text(cube.namespace),
            Text(", ".join(cube.tags)),
            Text(str(cube.version)),
        ]
        if score_list is None:
            cells += [Text(str(cube.state)), Text(when(cube.created_at))]
        cells.append(Text(preview(cube.text)))
        table.add_row(*cells)
    return table


def history_table(versions: Iterable[MemCube]) -> Table:
    table = Table(header_style="bold")
    for name in ("version", "state", "updated", "tags", "expires", "text"):
        table.add_column(name, no_wrap=name in ("updated", "expires"))
    for cube in versions:
        table.add_row(
            Text(str(cube.version)),
            Text(str(cube.state)),
            Text(when(cube.updated_at)),
            Text(", ".join(cube.tags)),
            Text(when(cube.expires_at) if cube.expires_at else "never"),
            Text(preview(cube.text, 80)),
        )
    return table


def stats_panel(stats: Stats) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column()
    rows: list[tuple[str, str]] = [
        ("cubes", f"{stats.cubes} ({stats.versions} versions)"),
        ("size", f"{stats.size_bytes} B"),
        ("by state", _counts(stats.by_state)),
        ("by kind", _counts(stats.by_kind)),
        ("by namespace", _counts(stats.by_namespace)),
        ("embedding", f"{stats.embedding_model} ({stats.embedding_dim} dims)"),
        (
            "search index",
            ("ANN" if stats.ann_index else "exact scan")
            + f", {stats.unindexed_rows} rows not yet indexed",
        ),
    ]
    for key, value in rows:
        grid.add_row(key, Text(value))
    return Panel(grid, title="memosd stats", title_align="left", expand=False)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"


_EVENT_STYLE = {"put": "green", "update": "yellow", "delete": "red"}


def event_line(event: ChangeEvent) -> Text:
    line = Text()
    line.append(when(event.at), style="dim")
    line.append("  ")
    line.append(f"{event.type.upper():<7}", style=_EVENT_STYLE.get(event.type, "magenta"))
    line.append(f" {event.id} v{event.version}  {event.namespace}")
    if event.cube is not None and event.cube.plaintext is not None:
        line.append("  " + preview(event.cube.text, 80))
    return line


def progress(
    description: str = "{task.description}",
    *extra: ProgressColumn,
    quiet: bool = False,
) -> Progress:
    """The commands' progress bar on stderr: off when stderr is not a terminal or ``quiet``
    (--json), so scripts and pipes only ever see the result."""
    console = stderr()
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
    )
