"""The client's one-bit hint travels over gRPC to the tier manager."""

from __future__ import annotations

import pytest

from memos.client import JobsClient, MemosClient
from tests.fixtures.daemon import ServerHandle


def test_hint_reaches_the_manager_and_a_bad_one_is_refused(server: ServerHandle) -> None:
    with MemosClient(server.addr, token=server.tokens["acme"]) as memos:
        jobs = JobsClient(memos)
        cube = memos.put("The standup moved to 9:30 on Tuesdays.")
        memos.get(cube.id, hint="done")
        done = jobs.explain(cube.id)
        assert (done.latest_bit, done.bit_source) == (1, "hint")
        memos.search("when is the standup?", k=1, hint="reuse")
        reuse = jobs.explain(cube.id)
        assert (reuse.latest_bit, reuse.bit_source) == (0, "hint")
        assert reuse.accesses == 2
        with pytest.raises(ValueError, match="hint must be"):
            memos.get(cube.id, hint="later")  # type: ignore[arg-type]
