"""A real daemon with the tiny model as its base model, and clients of its two services."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from memos.client import MemosClient
from memos.client_adapters import AdapterClient
from tests.fixtures.daemon import ServerHandle, start_server

#: Engine slots of the test daemon: small, so that a few adapters make it evict.
SLOTS = 2


@pytest.fixture
def adapter_server(tmp_path: Path, tiny_model_dir: Path) -> Iterator[ServerHandle]:
    handle = start_server(
        tmp_path / "data",
        tokens=True,
        engine={"model_path": tiny_model_dir},
        parameter={"slots": SLOTS},
    )
    yield handle
    handle.server.stop(grace_s=1)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The tiny model trains faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Clients:
    """Open clients of one daemon, one per token name, closed at the end of the test."""

    def __init__(self, handle: ServerHandle) -> None:
        self.handle = handle
        self._open: dict[tuple[str, str | None], MemosClient] = {}

    def memos(self, who: str = "acme", *, tenant: str | None = None) -> MemosClient:
        key = (who, tenant)
        if key not in self._open:
            self._open[key] = MemosClient(
                self.handle.addr, token=self.handle.tokens[who], tenant=tenant
            )
        return self._open[key]

    def adapters(self, who: str = "acme", *, tenant: str | None = None) -> AdapterClient:
        return AdapterClient(self.memos(who, tenant=tenant))

    def close(self) -> None:
        for client in self._open.values():
            client.close()


@pytest.fixture
def clients(adapter_server: ServerHandle) -> Iterator[Clients]:
    c = Clients(adapter_server)
    yield c
    c.close()
