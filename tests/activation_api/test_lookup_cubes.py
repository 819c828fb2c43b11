"""A Lookup naming the prompt's memory cubes (what MemCubeKVConnector sends from a request's
``memos.cube_ids`` and ``memos.hint``) counts as a read of each cube for the tier manager."""

from __future__ import annotations

import pytest

from memos.client import JobsClient
from memos.errors import InvalidArgument
from memos.ids import new_id
from tests.activation_api.conftest import StartKv
from tests.activation_api.test_migrate import TEXT, Connect, chunk_keys


def test_a_lookup_with_cube_ids_and_a_hint_is_a_page_request(
    start_kv: StartKv, connect: Connect
) -> None:
    handle = start_kv()
    memos, kv = connect(handle, "acme")
    jobs = JobsClient(memos)
    plain = memos.put(TEXT)
    other = memos.put("Incident reviews happen on Thursdays; every action item gets an owner.")
    activation = kv.migrate(plain.id, to="activation").cube
    keys = chunk_keys(activation.activation.chunk_keys)  # type: ignore[union-attr]
    assert jobs.explain(plain.id).accesses == 0

    found = kv.lookup(keys, pin=True, cube_ids=[plain.id], hint="done")
    assert found.pinned == len(keys)  # the answer about the keys is unchanged
    assert kv.release(found.lease_id)
    done = jobs.explain(plain.id)
    assert (done.accesses, done.latest_bit, done.bit_source) == (1, 1, "hint")
    assert [a.op for a in done.recent] == ["kv-lookup"]

    # The activation cube's id counts for its plaintext; without a hint the predictor decides;
    # an id named twice is read once; an unknown (or another tenant's) id is skipped.
    unknown = new_id()
    kv.lookup(keys, cube_ids=[activation.id, other.id, other.id, unknown])
    again = jobs.explain(plain.id)
    assert again.accesses == 2 and again.bit_source == "predictor"
    assert jobs.explain(other.id).accesses == 1
    _, kv_b = connect(handle, "globex")
    kv_b.lookup(keys, cube_ids=[plain.id], hint="reuse")
    assert jobs.explain(plain.id).accesses == 2

    # A Lookup without cube ids is no read.
    kv.lookup(keys)
    assert jobs.explain(plain.id).accesses == 2

    with pytest.raises(InvalidArgument, match="malformed cube id"):
        kv.lookup(keys, pin=True, cube_ids=["not-an-id"])
    assert kv.stats().leases == 0, "a refused Lookup pins nothing"
    with pytest.raises(InvalidArgument, match="hint must be"):
        kv.lookup(keys, cube_ids=[plain.id], hint="later")
