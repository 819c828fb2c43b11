"""The plugin entry point and the import boundary: the daemon's side never imports vLLM."""

from __future__ import annotations

import subprocess
import sys

import pytest

from memos.integrations.vllm import CONNECTOR_NAME

pytestmark = pytest.mark.vllm


def test_the_package_and_its_helpers_do_not_import_vllm() -> None:
    code = (
        "import sys\n"
        "import memos.integrations.vllm, memos.integrations.vllm.plugin\n"
        "import memos.integrations.vllm.layout, memos.integrations.vllm.settings\n"
        "print('vllm' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_register_makes_the_connector_name_resolvable() -> None:
    from vllm.config import KVTransferConfig
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory

    from memos.integrations.vllm.connector import MemCubeKVConnector
    from memos.integrations.vllm.plugin import register

    register()
    register()  # every vLLM process calls it; twice must not fail
    config = KVTransferConfig(kv_connector=CONNECTOR_NAME, kv_role="kv_both")
    assert KVConnectorFactory.get_connector_class(config) is MemCubeKVConnector


def test_a_resolver_error_reaches_the_client_with_its_status_and_advice() -> None:
    from vllm.entrypoints.serve.exception_handling.error_response import create_error_response

    from memos.integrations.vllm.lora_resolver import ResolverError, http_error

    advice = "memosd at 127.0.0.1:1 did not answer: check MEMOS_VLLM_RESOLVER_DAEMON"
    response = create_error_response(http_error(ResolverError(advice, 503)))
    assert response.error.code == 503 and response.error.message == advice
