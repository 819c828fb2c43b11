"""The ``vllm.general_plugins`` entry point: ``memos = memos.integrations.vllm.plugin:register``.

vLLM calls :func:`register` in every process it starts (API server, engine core, workers)
before it builds the engine. It registers the KV connector's name with vLLM's
``KVConnectorFactory``, so ``--kv-transfer-config '{"kv_connector": "MemCubeKVConnector",
...}'`` works without ``kv_connector_module_path`` (the module path still works, and wins).
Registration is lazy: the connector module is imported only when an engine uses it.
It also registers memos's LoRA resolver, which vLLM consults for an unknown adapter name
when the server runs with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``.
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
    """Register memos's ``LoRAResolver`` (``memos.integrations.vllm.lora_resolver``): an
    unknown adapter name is fetched from memosd. Off with MEMOS_VLLM_RESOLVER_ENABLED=0."""
    from memos.integrations.vllm.lora_resolver import register_resolver

    register_resolver()
