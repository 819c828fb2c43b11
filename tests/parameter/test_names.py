"""Adapter and file names never leave the store's directory."""

from __future__ import annotations

import pytest

from memos.errors import InvalidArgument
from memos.tiers.parameter.names import check_adapter_name, check_file_name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../x", "'..'"),
        ("..", "'..'"),
        ("a/../../b", "'..'"),
        ("/etc/passwd", "absolute path"),
        ("\\\\server\\share", "absolute path"),
        ("C:evil", "absolute path"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("a\x00b", "NUL"),
        ("tab\there", "control character"),
        ("", "empty"),
        ("x..y", "'..'"),
        ("-leading-dash", "bad adapter name"),
        ("sp ace", "bad adapter name"),
        ("a" * 129, "bad adapter name"),
    ],
)
def test_bad_adapter_names_are_rejected_with_the_reason(name: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        check_adapter_name(name)


@pytest.mark.parametrize("name", ["support-bot", "v1.2_beta", "A", "a" * 128])
def test_good_adapter_names_pass(name: str) -> None:
    assert check_adapter_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../adapter_config.json", "'..'"),
        ("/tmp/adapter_model.safetensors", "absolute path"),
        ("sub/adapter_config.json", "path separator"),
        ("adapter_model.safetensors\x00.txt", "NUL"),
        ("adapter_model.bin", "unexpected file"),
        ("README.md", "unexpected file"),
    ],
)
def test_bad_file_names_are_rejected(name: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        check_file_name(name)
