"""Daemons with an activation tier: a real gRPC server on localhost, the tiny model as engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from memos.client import MemosClient
from memos.client_activation import ActivationClient
from tests.fixtures.daemon import ServerHandle, start_server
from tests.fixtures.tiny_model import TINY_CHUNK_TOKENS

StartKv = Callable[..., ServerHandle]


@pytest.fixture
def start_kv(tmp_path: Path, tiny_model_dir: Path) -> Iterator[StartKv]:
    """``start_kv(model=True, activation={...}, **settings)``: a server with tokens."""
    handles: list[ServerHandle] = []

    def start(
        *, model: bool = True, activation: dict[str, Any] | None = None, **extra: Any
    ) -> ServerHandle:
        overrides: dict[str, Any] = {
            "activation": {"chunk_tokens": TINY_CHUNK_TOKENS, **(activation or {})},
            **extra,
        }
        if model:
            overrides["engine"] = {"model_path": tiny_model_dir}
        handle = start_server(tmp_path / f"data-{len(handles)}", tokens=True, **overrides)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.server.stop(grace_s=1)


@pytest.fixture
def kv_server(start_kv: StartKv) -> ServerHandle:
    return start_kv()


@pytest.fixture
def connect() -> Iterator[Callable[[ServerHandle, str], tuple[MemosClient, ActivationClient]]]:
    """``connect(handle, who)``: a client with ``who``'s token, and its activation calls."""
    clients: list[MemosClient] = []

    def open_client(handle: ServerHandle, who: str) -> tuple[MemosClient, ActivationClient]:
        client = MemosClient(handle.addr, token=handle.tokens[who])
        clients.append(client)
        return client, ActivationClient(client)

    yield open_client
    for client in clients:
        client.close()
