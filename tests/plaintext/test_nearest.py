"""Vector queries through LanceDB's asynchronous table give the rows the synchronous query
builder gives, exact and through the ANN index, with filters applied before or after."""

from __future__ import annotations

import numpy as np
import pytest

from memos.tiers.plaintext.nearest import NearestQuery, _nearest_sync, inner_table, nearest
from tests.plaintext.conftest import OpenStore
from tests.plaintext.helpers import cube, unit_vectors


def test_the_pinned_lancedb_takes_the_asynchronous_path(open_store: OpenStore) -> None:
    store = open_store()
    # If a LanceDB release moves the inner table, searches fall back to the slower
    # synchronous builder: this fails so that someone looks.
    assert inner_table(store._table) is not None


@pytest.mark.parametrize("indexed", [False, True])
def test_both_paths_return_the_same_rows(open_store: OpenStore, indexed: bool) -> None:
    store = open_store(ann_min_rows=256, maintenance_idle_s=0)
    vectors = unit_vectors(600, seed=3)
    store.put(
        [
            cube(f"note {i}", embedding=v, tenant="acme" if i % 3 else "other")
            for i, v in enumerate(vectors)
        ]
    )
    if indexed:
        assert store.refresh_index() is True
    columns = ["id", "tenant", "_distance"]
    for query in unit_vectors(8, seed=4):
        for where in ("tenant = 'acme'", "true"):
            for exact in (True, False):
                for postfilter in (False, True):
                    q = NearestQuery(query, where, 10, columns, exact=exact, postfilter=postfilter)
                    fast, slow = nearest(store._table, q), _nearest_sync(store._table, q)
                    # A filter after the search keeps those of the top 10 that pass it.
                    filtered_after = postfilter and where != "true"
                    assert fast.num_rows == 10 or (filtered_after and fast.num_rows > 0)
                    assert fast["id"].to_pylist() == slow["id"].to_pylist()
                    assert np.allclose(
                        fast["_distance"].to_numpy(), slow["_distance"].to_numpy(), atol=1e-6
                    )
                    if where != "true":
                        assert set(fast["tenant"].to_pylist()) == {"acme"}
