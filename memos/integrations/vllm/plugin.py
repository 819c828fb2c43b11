"""The ``vllm.general_plugins`` entry point: ``memos = memos.integrations.vllm.plugin:register``.

vLLM calls :func:`register` in every process it starts (API server, engine core, workers)
before it builds the engine. It registers the KV connector's name with vLLM's
``KVConnectorFactory``, so ``--kv-transfer-config '{"kv_connector": "MemCubeKVConnector",
...}'`` works without ``kv_connector_module_path`` (the module path still works, and wins).
Registration is lazy: the connector module is imported only when an engine uses it.
"""

from __future__ import annotations

import logging

from memos.integrations.vllm import CONNECTOR_MODULE, CONNECTOR_NAME

log = logging.getLogger(__name__)


def register() -> None:
    """Register memos's vLLM plugins; safe to call more than once per process."""
    register_kv_connector()
    register_lora_resolver()


def register_kv_connector() -> None:
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory

    # vLLM keeps its registry on the class and refuses a second registration of a name.
    if CONNECTOR_NAME in KVConnectorFactory._registry:
        return
    KVConnectorFactory.register_connector(CONNECTOR_NAME, CONNECTOR_MODULE, CONNECTOR_NAME)


def register_lora_resolver() -> None:
    # ---- LoRA resolver: owned by the parameter tier's vLLM issue --------------------------
    # Register memos's LoRAResolver here (vllm.lora.resolver.LoRAResolverRegistry
    # .register_resolver("memos", ...)); it resolves adapter names through the daemon's
    # AdapterService. Until it lands, this plugin registers the KV connector only.
    return
