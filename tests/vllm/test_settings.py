"""The connector's settings (kv_connector_extra_config) and per-request switches."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from memos.integrations.vllm.settings import ConnectorSettings, request_params

pytestmark = pytest.mark.vllm


def test_a_typo_in_the_extra_config_fails_at_start() -> None:
    with pytest.raises(ValidationError, match="deamon"):
        ConnectorSettings.from_extra_config({"deamon": "127.0.0.1:1"})


def test_token_file_wins_and_is_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("tok-from-file\n")
    settings = ConnectorSettings.from_extra_config({"token": "inline", "token_file": str(secret)})
    assert settings.bearer_token() == "tok-from-file"
    assert ConnectorSettings.from_extra_config({"token": "inline"}).bearer_token() == "inline"


def test_an_unreadable_token_file_leaves_no_token(tmp_path: Path) -> None:
    settings = ConnectorSettings.from_extra_config({"token_file": str(tmp_path / "missing")})
    assert settings.bearer_token() is None


def test_request_switches_default_to_the_engines_and_bad_values_are_ignored() -> None:
    defaults = ConnectorSettings.from_extra_config({"save": False})
    plain = request_params(None, defaults)
    assert (plain.load, plain.save, plain.cube_ids, plain.hint, plain.report) == (
        True, False, (), None, False,
    )  # fmt: skip
    given = request_params(
        {"memos.save": True, "memos.cube_ids": ["a", "b"], "memos.hint": 1}, defaults
    )
    assert (given.save, given.cube_ids, given.hint, given.report) == (True, ("a", "b"), True, True)
    bad = request_params(
        {"memos.load": "yes", "memos.cube_ids": "a", "memos.hint": 7, "other": 1}, defaults
    )
    assert (bad.load, bad.cube_ids, bad.hint, bad.report) == (True, (), None, True)
