"""A real PlaintextStore over real LanceDB in a temp dir, with the real MiniLM model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memos.config import PlaintextSettings
from memos.embed import Embedder
from memos.tiers.plaintext import PlaintextStore

OpenStore = Callable[..., PlaintextStore]


@pytest.fixture
def open_store(tmp_path: Path, minilm: Embedder) -> Iterator[OpenStore]:
    """Opens stores on ``tmp_path/plaintext`` (settings overridable); closes them all after."""
    opened: list[PlaintextStore] = []

    def _open(**overrides: object) -> PlaintextStore:
        store = PlaintextStore(
            str(tmp_path / "plaintext"),
            embedder=minilm,
            settings=PlaintextSettings.model_validate(overrides),
        )
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: OpenStore) -> PlaintextStore:
    return open_store()
