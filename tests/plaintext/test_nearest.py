"""Vector queries through LanceDB's asynchronous table give the rows the synchronous query
builder gives, exact and through the ANN index, with filters applied before or after."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from memos.cube import PlaintextPayload, State, utcnow
from memos.tiers.plaintext import CubeFilter
from memos.tiers.plaintext.nearest import NearestQuery, _nearest_sync, inner_table, nearest
from tests.plaintext.conftest import OpenStore
from tests.plaintext.helpers import bump, cube, unit_vectors


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


def test_the_plain_filter_fast_path_returns_only_latest_live_cubes_of_the_tenant(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(ann_min_rows=256, maintenance_idle_s=0)
    query = unit_vectors(1, seed=7)[0]
    near = query + 0.05 * unit_vectors(1, seed=8)[0]
    near = near / np.linalg.norm(near)
    filler = [cube(f"note {i}", embedding=v) for i, v in enumerate(unit_vectors(600, seed=9))]
    other = [cube("other tenant", tenant="other", embedding=near) for _ in range(5)]
    superseded = cube("superseded", embedding=near)
    archived = cube("archived", embedding=near)
    expired = cube(
        "expired", embedding=near, created_at=utcnow() - timedelta(hours=2), ttl=timedelta(hours=1)
    )
    live = [cube(f"live {i}", embedding=near) for i in range(3)]
    store.put([*filler, *other, superseded, archived, expired, *live])
    far = -query
    store.update(
        "acme",
        superseded.id,
        bump({"plaintext": PlaintextPayload(text="moved", embedding=tuple(far.tolist()))}),
    )
    store.update("acme", archived.id, bump({"state": State.ARCHIVED}))
    assert store.refresh_index() is True

    calls: list[int] = []
    fast = store._nearest_plain

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return fast(*args, **kwargs)

    monkeypatch.setattr(store, "_nearest_plain", counted)
    hits = store.search("acme", query, 10, CubeFilter())
    assert calls, "the fast path was not taken"
    found = [c.id for c, _ in hits]
    assert len(found) == 10
    assert set(found[:3]) == {c.id for c in live}
    assert not {superseded.id, archived.id, expired.id} & set(found)
    assert all(c.tenant == "acme" and c.state == State.ACTIVE for c, _ in hits)
    assert all(c.version == 1 for c, _ in hits)  # never an old version
    # Archived cubes are there for a filter that asks for them.
    with_archived = store.search(
        "acme", query, 10, CubeFilter(states=(State.ACTIVE, State.ARCHIVED))
    )
    assert archived.id in {c.id for c, _ in with_archived}
    assert superseded.id not in {c.id for c, _ in with_archived}
    exact = [c.id for c, _ in store.search("acme", query, 10, CubeFilter(), exact=True)]
    assert set(found[:3]) == set(exact[:3])


@pytest.mark.parametrize("k", [1, 10, 100])
@pytest.mark.parametrize("share", [1.0, 0.95, 0.7, 0.5, 0.3])
def test_the_over_fetch_rarely_falls_short_and_fetches_little_when_all_pass(
    k: int, share: float
) -> None:
    from math import comb

    from memos.tiers.plaintext.store import over_fetch

    n = over_fetch(k, share)
    # The exact binomial chance that fewer than k of n candidates pass: under 1%.
    short = sum(comb(n, i) * share**i * (1 - share) ** (n - i) for i in range(k))
    assert short < 0.01, (n, short)
    if share == 1.0:
        assert n == k + 2  # every candidate passes: only the spare for expiries
    assert n <= over_fetch(k, share * 0.9)  # a rarer filter never fetches fewer
