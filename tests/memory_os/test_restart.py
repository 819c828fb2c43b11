"""After a restart the jobs cover every tenant in the table, not only those seen since."""

from __future__ import annotations

import time
from pathlib import Path

from memos.client import JobsClient, MemosClient
from memos.errors import NotFound
from tests.fixtures.daemon import start_server

QUIET = {
    "lifecycle_interval_s": 3600,
    "fuse_interval_s": 3600,
    "retrain_interval_s": 3600,
    "coretrieval_interval_s": 3600,
}


def test_expire_and_fuse_reach_tenants_written_before_the_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_server(data, tokens=True, jobs=QUIET)
    try:
        with MemosClient(first.addr, token=first.tokens["globex"]) as globex:
            short = globex.put("A fleeting note about lunch.", ttl_seconds=1).id
            kept = globex.put("The VPN config lives in the infra wiki.").id
        with MemosClient(first.addr, token=first.tokens["acme"]) as acme:
            dup = acme.put("The on-call rota swaps every Monday at nine.").id
    finally:
        first.server.stop(grace_s=1)

    second = start_server(data, tokens=True, jobs={**QUIET, "fuse_lexical": 0.5})
    try:
        kernel = second.server.kernel()
        assert kernel.plaintext.tenants() == ("acme", "globex")
        assert kernel.manager is not None and kernel.manager.tenants() == []
        time.sleep(1.2)
        with MemosClient(second.addr, token=second.tokens["admin"]) as ops:
            admin = JobsClient(ops)
            swept = admin.run_job("expire")
            assert swept.ok and swept.detail.startswith("removed 1 "), swept.detail
            with MemosClient(second.addr, token=second.tokens["acme"]) as acme:
                twin = acme.put("The on-call rota swaps every Monday at nine sharp.").id
                # Nobody of acme has read anything since the restart: fuse still finds it.
                fused = admin.run_job("fuse")
                assert fused.ok and fused.detail.startswith("1 fused cubes"), fused.detail
                assert {acme.get(dup).state.value, acme.get(twin).state.value} == {"archived"}
        with MemosClient(second.addr, token=second.tokens["globex"]) as globex:
            try:
                globex.history(short)
                raise AssertionError("the expired cube is still there")
            except NotFound:
                pass
            assert globex.get(kept).text.startswith("The VPN")
    finally:
        second.server.stop(grace_s=1)
