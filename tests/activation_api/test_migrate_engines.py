"""Migrate with engine "vllm": what the daemon says before any vLLM server is involved.

The end-to-end migration through a real vLLM server is in tests/vllm/test_warmup.py.
"""

from __future__ import annotations

import pytest

from memos.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unavailable
from tests.activation_api.conftest import StartKv
from tests.activation_api.test_migrate import TEXT, Connect
from tests.fixtures.daemon import free_port


def test_engine_and_url_errors_name_what_to_fix(start_kv: StartKv, connect: Connect) -> None:
    handle = start_kv(model=False)  # the vLLM path needs no model in the daemon
    memos, kv = connect(handle, "acme")
    plain = memos.put(TEXT)
    with pytest.raises(InvalidArgument, match=r"engine 'sglang' is not available.*'vllm'"):
        kv.migrate(plain.id, to="activation", engine="sglang")
    with pytest.raises(InvalidArgument, match="needs engine_url"):
        kv.migrate(plain.id, to="activation", engine="vllm")
    with pytest.raises(InvalidArgument, match="not an http"):
        kv.migrate(plain.id, to="activation", engine="vllm", engine_url="127.0.0.1:8000")
    with pytest.raises(InvalidArgument, match="for engine 'vllm' only"):
        kv.migrate(plain.id, to="activation", engine="hf", engine_url="http://127.0.0.1:1")
    # engine_url comes from the caller: only the operator's hosts (loopback by default).
    with pytest.raises(PermissionDenied, match=r"'10\.0\.0\.7' is not in .*engine\.vllm_hosts"):
        kv.migrate(plain.id, to="activation", engine="vllm", engine_url="http://10.0.0.7:8000")
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unavailable, match=f"cannot reach vLLM at {down}"):
        kv.migrate(plain.id, to="activation", engine="vllm", engine_url=down)
    # Nothing was recorded, and the daemon's own engine is still the default.
    assert list(memos.list(kind="activation")) == []
    with pytest.raises(FailedPrecondition, match=r"engine\.model_path"):
        kv.migrate(plain.id, to="activation")
