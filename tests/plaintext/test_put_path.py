"""The put path's duplicate check: recent ids settle new ids, older ones are looked up."""

from __future__ import annotations

import pytest

from memos.cube import PlaintextPayload
from memos.errors import AlreadyExists
from memos.tiers.plaintext import PlaintextStore
from tests.plaintext.conftest import OpenStore
from tests.plaintext.helpers import cube, unit_vectors


def test_an_id_from_before_a_reopen_is_looked_up_in_the_table(open_store: OpenStore) -> None:
    store = open_store()
    [first] = store.put([cube("written before the restart", embedding=unit_vectors(1, 1)[0])])
    store.close()
    again = open_store()
    # The reopened store's recent set never saw this id: only the table knows it.
    assert first.tenant and (first.tenant, first.id) not in again._recent
    clone = first.model_copy(update={"plaintext": PlaintextPayload(text="an impostor")})
    with pytest.raises(AlreadyExists, match=first.id):
        again.put([clone])
    [other] = again.put([cube("a new one", embedding=unit_vectors(1, 2)[0])])
    assert [c.text for c in again.history("acme", first.id)] == ["written before the restart"]
    assert (other.tenant, other.id) in again._recent


def test_a_purged_id_may_be_put_again(store: PlaintextStore) -> None:
    [gone] = store.put([cube("purge me", embedding=unit_vectors(1, 3)[0])])
    assert store.purge("acme", gone.id) == 1
    [back] = store.put([gone.model_copy(update={"plaintext": PlaintextPayload(text="back")})])
    assert back.id == gone.id and back.plaintext is not None and back.text == "back"
    assert [c.text for c in store.history("acme", gone.id)] == ["back"]
    with pytest.raises(AlreadyExists):
        store.put([gone])


def test_new_ids_commit_without_a_table_lookup(store: PlaintextStore) -> None:
    store.put([cube("the table is not empty", embedding=unit_vectors(1, 4)[0])])
    lookups: list[int] = []
    table = store._table
    original = table.search

    def counting_search(*args: object, **kwargs: object) -> object:
        lookups.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    table.search = counting_search  # type: ignore[method-assign,assignment]
    try:
        stored = store.put(
            [cube(f"fresh {i}", embedding=v) for i, v in enumerate(unit_vectors(8, 5))]
        )
    finally:
        table.search = original  # type: ignore[method-assign]
    assert len(stored) == 8 and lookups == []
    assert all(store.get("acme", c.id) is not None for c in stored)


# ------------------------------------------------------------------ maintenance vs. writes


def test_the_jobs_hold_off_while_writes_stream_in(open_store: OpenStore) -> None:
    store = open_store(ann_min_rows=256, maintenance_idle_s=3600, maintenance_max_defer_s=3600)
    store.put([cube(f"v{i}", embedding=v) for i, v in enumerate(unit_vectors(300, 11))])
    version = store.table_version
    assert store.refresh_index(defer_to_writes=True) is False
    store.compact(defer_to_writes=True)
    assert store.table_version == version and not store.stats(None).ann_index
    # Called directly (not as the periodic job), they never wait.
    assert store.refresh_index() is True and store.stats(None).ann_index


def test_the_jobs_run_once_writes_pause_or_held_off_too_long(open_store: OpenStore) -> None:
    idle = open_store(ann_min_rows=256, maintenance_idle_s=0)
    idle.put([cube(f"v{i}", embedding=v) for i, v in enumerate(unit_vectors(300, 12))])
    assert idle.refresh_index(defer_to_writes=True) is True
    idle.close()
    capped = open_store(ann_min_rows=256, maintenance_idle_s=3600, maintenance_max_defer_s=0)
    capped.put([cube("one more", embedding=unit_vectors(1, 13)[0])])
    version = capped.table_version
    capped.compact(defer_to_writes=True)
    assert capped.table_version > version


def test_compaction_with_nothing_new_writes_nothing(store: PlaintextStore) -> None:
    store.put([cube(f"c{i}", embedding=v) for i, v in enumerate(unit_vectors(3, 14))])
    store.put([cube("a second file", embedding=unit_vectors(1, 15)[0])])
    store.compact()
    version = store.table_version
    store.compact()
    assert store.table_version == version
    [late] = store.put([cube("new rows", embedding=unit_vectors(1, 16)[0])])
    store.compact()
    assert store.table_version > version + 1  # the put's commit, then the compaction's
    assert store.get("acme", late.id) is not None and len(store.stats("acme").by_state) == 1
