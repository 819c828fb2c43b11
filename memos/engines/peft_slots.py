"""The Hugging Face engine's adapter slots as a slot driver (``memos.tiers.parameter.slots``).

The same interface as the vLLM server's (``memos.engines.vllm_lora``): the daemon's policy
decides, ``AdapterSlots.serve`` carries the decision out here with peft.
"""

from __future__ import annotations

from memos.engines.lora import LoRAEngine
from memos.tiers.parameter.record import AdapterRecord
from memos.tiers.parameter.store import AdapterStore


class PeftLoRASlots:
    """Loads adapter versions from ``store`` into ``engine``'s slots, keyed like vLLM's."""

    kind = "peft"

    def __init__(self, engine: LoRAEngine, store: AdapterStore) -> None:
        self.engine = engine
        self.store = store

    def load(self, key: str, record: AdapterRecord) -> None:
        if key in self.engine.loaded:
            return
        # The store re-checks the digest: what the engine runs is what was registered.
        self.engine.load(key, self.store.load(record), path=record.path)

    def unload(self, key: str) -> None:
        if key in self.engine.loaded:
            self.engine.unload(key)

    def served(self) -> tuple[str, ...]:
        return self.engine.loaded
