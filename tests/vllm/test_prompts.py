"""Prompt layout: shared parts first, cubes in one canonical order, the query last."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from memos.integrations.vllm.prompts import build_prompt, canonical_order

pytestmark = pytest.mark.vllm


@dataclass(frozen=True)
class Cube:
    id: str
    text: str


A = Cube("01J0000000000000000000000A", "Alice likes tea.")
B = Cube("01J0000000000000000000000B", "Bob owns a boat.")
C = Cube("01J0000000000000000000000C", "Carol moved to Oslo.")


def test_same_cubes_in_any_order_build_the_same_prefix() -> None:
    one = build_prompt("You are helpful.", [C, A, B], "Who sails?")
    two = build_prompt("You are helpful.", [B, C, A, B], "Who sails?")
    assert one == two
    assert one.index(A.text) < one.index(B.text) < one.index(C.text) < one.index("Who sails?")


def test_a_newer_cube_extends_the_prefix_of_the_older_ones() -> None:
    before = build_prompt("sys", [A, B], "")
    after = build_prompt("sys", [B, C, A], "q")
    assert after.startswith(before)


def test_canonical_order_keeps_the_first_of_duplicate_ids() -> None:
    dup = Cube(A.id, "a stale copy")
    assert canonical_order([A, dup, B]) == [A, B]
