"""Two stores (two replicas in shared mode) on one LanceDB table: reads see the other's commits."""

from __future__ import annotations

import numpy as np

from memos.tiers.plaintext.store import CubeFilter
from tests.plaintext.conftest import OpenStore
from tests.plaintext.helpers import cube


def test_a_replica_reads_what_another_committed_after_it_opened(open_store: OpenStore) -> None:
    a = open_store(read_consistency_s=0)
    b = open_store(read_consistency_s=0)
    written = a.put([cube("rotate the deploy key on Mondays")])[0]
    seen = b.get("acme", written.id)
    assert seen is not None and seen.plaintext is not None
    assert seen.plaintext.text == "rotate the deploy key on Mondays"
    assert written.plaintext is not None and written.plaintext.embedding is not None
    hits = b.search("acme", np.array(written.plaintext.embedding), 1, CubeFilter(), exact=True)
    assert [c.id for c, _ in hits] == [written.id]


def test_without_a_consistency_interval_a_replica_keeps_its_snapshot(
    open_store: OpenStore,
) -> None:
    # The single-daemon default pays no re-check per read; this is why shared mode sets one.
    a = open_store()
    b = open_store()
    written = a.put([cube("the staging cluster drains on Fridays")])[0]
    assert b.get("acme", written.id) is None
