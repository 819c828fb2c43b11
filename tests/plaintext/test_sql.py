"""Filter SQL: literals are quoted so that no value can change a predicate's meaning.

Checked against real LanceDB: each hostile value matches exactly the rows that hold it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import lancedb
import pyarrow as pa
import pytest

from memos.cube import State
from memos.errors import InvalidArgument
from memos.tiers.plaintext.schema import metadata_entries, metadata_entry
from memos.tiers.plaintext.sql import CubeFilter, filter_clause, ids_clause, quote, timestamp

HOSTILE = [
    "plain",
    "o'neil",
    "''",
    "\\'",
    "back\\slash",
    "trailing\\",
    "x' OR '1'='1",
    "x\\' OR 1=1 --",
    ") OR (1=1",
    "') OR TRUE OR ('",
    "100%_like",
    'double"quote',
    "semi; DROP TABLE cubes; --",
    "new\nline",
    "unicode é 中 🙂",
    "a=b",
]


def test_quote() -> None:
    assert quote("o'neil") == "'o''neil'"
    assert quote("back\\slash") == "'back\\slash'"
    with pytest.raises(InvalidArgument):
        quote("nul\x00byte")


def test_timestamp_literal_is_utc_with_microseconds() -> None:
    at = datetime(2026, 1, 2, 4, 5, 6, 7, tzinfo=UTC)
    assert timestamp(at) == "timestamp '2026-01-02T04:05:06.000007Z'"
    plus_one = at.astimezone(UTC).replace(tzinfo=None)
    with pytest.raises(InvalidArgument):
        timestamp(plus_one)


def test_every_predicate_names_the_tenant() -> None:
    now = datetime.now(UTC)
    clause = filter_clause("acme", CubeFilter(), now)
    assert clause.startswith("tenant = 'acme' AND is_latest")
    assert ids_clause([("acme", "A"), ("globex", "B")]).count("tenant = ") == 2
    with pytest.raises(InvalidArgument):
        filter_clause("acme' OR '1'='1", CubeFilter(), now)


def test_metadata_entries_are_unambiguous() -> None:
    assert metadata_entry("a=b", "c") != metadata_entry("a", "b=c")
    assert metadata_entry("a\\", "=c") != metadata_entry("a\\=", "c")
    assert metadata_entries({"b": "2", "a": "1"}) == ["a=1", "b=2"]


@pytest.fixture
def hostile_table(tmp_path: Path) -> lancedb.table.Table:
    now = datetime.now(UTC)
    rows = []
    for i, value in enumerate(HOSTILE):
        for copy in range(i % 3 + 1):
            rows.append(
                {
                    "tenant": "acme" if copy != 1 else "globex",
                    "id": f"{i:02d}-{copy}",
                    "is_latest": True,
                    "state": "active",
                    "namespace": "ns",
                    "kind": "plaintext",
                    "expires_at": None,
                    "created_at": now,
                    "tags": [value, "common"],
                    "metadata_kv": metadata_entries({"k": value, "k=" + value: "v"}),
                }
            )
    schema = pa.schema(
        [
            pa.field("tenant", pa.string()),
            pa.field("id", pa.string()),
            pa.field("is_latest", pa.bool_()),
            pa.field("state", pa.string()),
            pa.field("namespace", pa.string()),
            pa.field("kind", pa.string()),
            pa.field("expires_at", pa.timestamp("us", tz="UTC")),
            pa.field("created_at", pa.timestamp("us", tz="UTC")),
            pa.field("tags", pa.list_(pa.string())),
            pa.field("metadata_kv", pa.list_(pa.string())),
        ]
    )
    db = lancedb.connect(str(tmp_path))
    return db.create_table("t", data=pa.Table.from_pylist(rows, schema=schema))


def matching(table: lancedb.table.Table, where: str) -> list[str]:
    return sorted(table.search().where(where).select(["id"]).to_arrow()["id"].to_pylist())


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_match_exactly_their_rows(
    hostile_table: lancedb.table.Table, value: str
) -> None:
    i = HOSTILE.index(value)
    mine = sorted(f"{i:02d}-{c}" for c in range(i % 3 + 1) if c != 1)
    now = datetime.now(UTC) + timedelta(seconds=1)
    for flt in (
        CubeFilter(tags=(value,)),
        CubeFilter(tags=(value, "common")),
        CubeFilter(metadata={"k": value}),
        CubeFilter(metadata={"k=" + value: "v"}),
        CubeFilter(metadata={"k": value}, tags=("common",), states=(State.ACTIVE,)),
    ):
        assert matching(hostile_table, filter_clause("acme", flt, now)) == mine, flt
    assert (
        matching(hostile_table, filter_clause("acme", CubeFilter(tags=(value + "x",)), now)) == []
    )
    keys = [("acme", f"{i:02d}-0"), ("acme", value)]
    assert matching(hostile_table, ids_clause(keys)) == [f"{i:02d}-0"]
