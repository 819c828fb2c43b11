"""vLLM integration: the ``MemCubeKVConnector`` KV connector and the ``vllm.general_plugins``
entry point that registers it.

vLLM loads the connector with ``--kv-transfer-config`` (``kv_connector_module_path`` =
``memos.integrations.vllm.connector``). Importing this package, its settings or its layout
module does not import vLLM; only ``connector`` does, and only vLLM imports that.
"""

CONNECTOR_NAME = "MemCubeKVConnector"
CONNECTOR_MODULE = "memos.integrations.vllm.connector"

__all__ = ["CONNECTOR_MODULE", "CONNECTOR_NAME"]
