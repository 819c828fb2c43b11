"""Prompt layout for exact KV reuse: ``[system][memory cubes, canonical order][query]``.

Reuse is prefix-only: vLLM and memosd key a block by every token before it, so two prompts
share stored KV up to their first differing token. Put what is shared first and what varies
last: the system prompt, then the memories, each cube's text in a canonical order, then the
request's own text. The canonical order is by cube id, which is time-sortable: older memories
first, so adding a memory extends the prompt after the ones already cached instead of
shifting them, and two requests naming the same cubes in any order build the same prefix.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar


class Cube(Protocol):
    """What a prompt needs of a cube (``memos.cube.MemCube`` fits)."""

    @property
    def id(self) -> str: ...

    @property
    def text(self) -> str: ...


C = TypeVar("C", bound=Cube)


def canonical_order(cubes: Iterable[C]) -> list[C]:
    """``cubes`` by id, each once (the first of duplicate ids)."""
    seen: dict[str, C] = {}
    for cube in cubes:
        seen.setdefault(cube.id, cube)
    return [seen[key] for key in sorted(seen)]


def build_prompt(
    system: str,
    cubes: Iterable[Cube],
    query: str,
    *,
    separator: str = "\n\n",
) -> str:
    """The prompt ``system``, the cubes' texts in canonical order, then ``query``."""
    parts = [system, *(cube.text for cube in canonical_order(cubes)), query]
    return separator.join(part for part in parts if part)
