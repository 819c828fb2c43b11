"""The parsers behind memosctl's flags (no daemon needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import typer

from memos.cli.options import parse_duration, parse_metadata, parse_tags, parse_time


def test_tags_split_on_commas_and_repeat_without_duplicates() -> None:
    assert parse_tags(["ops, infra", "ops", "keys"]) == ["ops", "infra", "keys"]
    assert parse_tags(None) == []
    assert parse_tags([" , "]) == []


def test_metadata_needs_key_equals_value() -> None:
    assert parse_metadata(["team=ops", "url=a=b", "empty="]) == {
        "team": "ops",
        "url": "a=b",
        "empty": "",
    }
    with pytest.raises(typer.BadParameter, match="KEY=VALUE"):
        parse_metadata(["novalue"])
    with pytest.raises(typer.BadParameter, match="KEY=VALUE"):
        parse_metadata(["=v"])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600), ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2W", 1209600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1.5h", "-3", "10y", "h"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="7d"):
        parse_duration(text)


def test_times_are_iso_or_ages() -> None:
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert parse_time("2h", "--after", now) == now - timedelta(hours=2)
    assert parse_time("2025-05-01T00:00:00Z", "--after") == datetime(2025, 5, 1, tzinfo=UTC)
    naive = parse_time("2025-05-01T00:00:00", "--after")
    assert naive is not None and naive.tzinfo is not None  # read as local time
    assert parse_time(None, "--after") is None
    with pytest.raises(typer.BadParameter, match="ISO"):
        parse_time("last tuesday", "--before")
