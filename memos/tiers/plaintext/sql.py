"""Filters, and the SQL predicates LanceDB evaluates for them.

Every literal goes through ``quote`` (strings), ``timestamp`` (datetimes) or is an integer the
code produced itself: no value a client sent ever reaches the SQL text any other way. LanceDB's
SQL follows the standard: a string literal ends at a lone ``'``, ``''`` is a quote, and a
backslash is an ordinary character. Column names are constants of this package.

Every predicate starts with the tenant: there is no way to build one without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from memos.cube import Kind, State, check_tenant
from memos.errors import InvalidArgument
from memos.tiers.plaintext.schema import metadata_entry


@dataclass(frozen=True)
class CubeFilter:
    """What a search or a listing may return. Empty fields do not filter.

    ``tags`` and ``metadata`` must all match; ``namespaces`` and ``states`` match any one.
    ``created_after`` is inclusive and ``created_before`` exclusive.
    """

    namespaces: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    kind: Kind | None = None
    states: tuple[State, ...] = (State.ACTIVE,)
    created_after: datetime | None = None
    created_before: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    include_expired: bool = False

    def is_plain(self) -> bool:
        """True when only the tenant, the states and expiry restrict the result."""
        return not (
            self.namespaces
            or self.tags
            or self.kind is not None
            or self.created_after is not None
            or self.created_before is not None
            or self.metadata
        )


def quote(value: str) -> str:
    """A SQL string literal holding exactly ``value``."""
    if "\x00" in value:
        raise InvalidArgument("a filter value contains a NUL character")
    return "'" + value.replace("'", "''") + "'"


def timestamp(value: datetime) -> str:
    """A SQL timestamp literal (UTC, microseconds) for an aware datetime."""
    if value.tzinfo is None:
        raise InvalidArgument("filter timestamps must be timezone-aware")
    return f"timestamp '{value.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}'"


def string_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(quote(v) for v in values) + "]"


def in_list(column: str, values: Iterable[str]) -> str:
    items = list(values)
    if not items:
        return "FALSE"
    if len(items) == 1:
        return f"{column} = {quote(items[0])}"
    return f"{column} IN ({', '.join(quote(v) for v in items)})"


def tenant_clause(tenant: str) -> str:
    check_tenant(tenant)
    return f"tenant = {quote(tenant)}"


def not_expired(now: datetime) -> str:
    return f"(expires_at IS NULL OR expires_at > {timestamp(now)})"


def cube_clause(tenant: str, cube_id: str, version: int | None = None) -> str:
    """The rows of one cube: its latest version, or the given one."""
    where = f"{tenant_clause(tenant)} AND id = {quote(cube_id)}"
    if version is None:
        return f"{where} AND is_latest"
    return f"{where} AND version = {int(version)}"


def ids_clause(keys: Iterable[tuple[str, str]]) -> str:
    """All rows of the given (tenant, id) pairs, grouped per tenant."""
    by_tenant: dict[str, list[str]] = {}
    for tenant, cube_id in keys:
        by_tenant.setdefault(tenant, []).append(cube_id)
    if not by_tenant:
        return "FALSE"
    parts = [
        f"({tenant_clause(t)} AND {in_list('id', sorted(set(ids)))})"
        for t, ids in sorted(by_tenant.items())
    ]
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"


def filter_clause(tenant: str, flt: CubeFilter, now: datetime) -> str:
    """The latest versions of ``tenant``'s cubes that ``flt`` lets through at ``now``."""
    parts = [tenant_clause(tenant), "is_latest"]
    if flt.states:
        parts.append(in_list("state", sorted({s.value for s in flt.states})))
    if not flt.include_expired:
        parts.append(not_expired(now))
    if flt.namespaces:
        parts.append(in_list("namespace", sorted(set(flt.namespaces))))
    if flt.kind is not None:
        parts.append(f"kind = {quote(flt.kind.value)}")
    if flt.tags:
        parts.append(f"array_has_all(tags, {string_list(sorted(set(flt.tags)))})")
    if flt.metadata:
        entries = sorted(metadata_entry(k, v) for k, v in flt.metadata.items())
        parts.append(f"array_has_all(metadata_kv, {string_list(entries)})")
    if flt.created_after is not None:
        parts.append(f"created_at >= {timestamp(flt.created_after)}")
    if flt.created_before is not None:
        parts.append(f"created_at < {timestamp(flt.created_before)}")
    return " AND ".join(parts)
