"""The options every command shares, and parsers for durations, times, tags and metadata."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from memos.client import DEFAULT_ADDR, MemosClient
from memos.config import client_env

CONNECTION = "Connection"
FILTERS = "Filters"

Addr = Annotated[
    str | None,
    typer.Option(
        "--addr",
        help=f"Daemon address HOST:PORT. Default: $MEMOS_ADDR, else {DEFAULT_ADDR}.",
        rich_help_panel=CONNECTION,
        show_default=False,
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Bearer token. Default: $MEMOS_TOKEN.",
        rich_help_panel=CONNECTION,
        show_default=False,
    ),
]
Tenant = Annotated[
    str | None,
    typer.Option(
        "--tenant",
        help=(
            "Tenant, in development mode (a daemon without tokens), or the tenant an admin "
            "token acts on; other tokens name their own. Default: $MEMOS_TENANT, else the "
            "daemon's choice ('default' in development mode)."
        ),
        rich_help_panel=CONNECTION,
        show_default=False,
    ),
]
Json = Annotated[
    bool,
    typer.Option("--json", help="Print exactly one JSON document on stdout instead of tables."),
]

Namespaces = Annotated[
    list[str] | None,
    typer.Option(
        "--namespace", "-n", help="Only this namespace (repeatable).", rich_help_panel=FILTERS
    ),
]
FilterTags = Annotated[
    list[str] | None,
    typer.Option(
        "--tags",
        "--tag",
        "-t",
        help="Only cubes carrying all these tags (repeatable, or comma-separated).",
        rich_help_panel=FILTERS,
    ),
]
FilterMeta = Annotated[
    list[str] | None,
    typer.Option(
        "--meta",
        "-m",
        help="Only cubes whose metadata has KEY=VALUE (repeatable).",
        rich_help_panel=FILTERS,
    ),
]
After = Annotated[
    str | None,
    typer.Option(
        "--after",
        help="Created after: an ISO time (naive means local) or an age such as 2h or 7d.",
        rich_help_panel=FILTERS,
    ),
]
Before = Annotated[
    str | None,
    typer.Option(
        "--before",
        help="Created before: an ISO time (naive means local) or an age such as 30m.",
        rich_help_panel=FILTERS,
    ),
]


def connect(addr: str | None, token: str | None, tenant: str | None) -> MemosClient:
    """The client for a command: flags first, then MEMOS_ADDR / MEMOS_TOKEN / MEMOS_TENANT."""
    return MemosClient.from_env(addr, token=token, tenant=tenant)


def resolved_addr(addr: str | None) -> str:
    return addr or client_env("ADDR") or DEFAULT_ADDR


def parse_tags(values: list[str] | None) -> list[str]:
    """Tags from repeated and comma-separated flags (a tag can never hold a comma)."""
    tags: list[str] = []
    for value in values or ():
        for raw in value.split(","):
            tag = raw.strip()
            if tag and tag not in tags:
                tags.append(tag)
    return tags


def parse_metadata(values: list[str] | None, flag: str = "--meta") -> dict[str, str]:
    metadata: dict[str, str] = {}
    for value in values or ():
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint=flag)
        metadata[key] = val
    return metadata


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")


def parse_duration(value: str, flag: str = "--ttl") -> int:
    """Seconds from '3600', '90s', '30m', '12h', '7d' or '2w'."""
    match = _DURATION.match(value.lower())
    if not match:
        raise typer.BadParameter(
            f"expected seconds or a number with s, m, h, d or w (e.g. 7d), got {value!r}",
            param_hint=flag,
        )
    return int(match[1]) * _UNITS[match[2] or "s"]


def parse_time(value: str | None, flag: str, now: datetime | None = None) -> datetime | None:
    """An aware datetime from an ISO 8601 string or an age ('2h' means two hours ago)."""
    if value is None:
        return None
    if _DURATION.match(value.lower()) and not value.strip().isdigit():
        return (now or datetime.now(UTC)) - timedelta(seconds=parse_duration(value, flag))
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"expected an ISO time such as 2025-06-01T12:00:00Z or an age such as 7d, "
            f"got {value!r}",
            param_hint=flag,
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()
