"""A connector that runs a test's hook (kill or freeze the daemon) just before a load.

It is the real connector, loaded by vLLM through ``kv_connector_module_path`` like any other:
the hook only picks the moment, between the scheduler's Lookup (which pinned the blocks) and
the worker's Fetch, so that a real daemon dies or stalls exactly when it hurts most.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from memos.integrations.vllm.connector import MemCubeKVConnector, MemCubeMetadata


class KillingConnector(MemCubeKVConnector):
    before_load: ClassVar[Callable[[], None] | None] = None

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        hook = KillingConnector.before_load
        if hook is not None and self.has_connector_metadata():
            meta = self._get_connector_metadata()
            if isinstance(meta, MemCubeMetadata) and meta.loads:
                KillingConnector.before_load = None
                hook()
        super().start_load_kv(forward_context, **kwargs)
