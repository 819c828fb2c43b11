"""The parameter tier's one in-process API: what a thin AdapterService servicer calls.

``ParameterTier`` puts the store, the merges and the training job behind the calls a client
makes: register (from a path, from bytes, or streamed through ``upload``), list, get,
delete, merge and train. Every adapter it produces is registered as a new versioned,
content-addressed record whose ``parents`` are its provenance (the merged adapters' version
ids, or the memories a training run learned from).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from memos.errors import FailedPrecondition
from memos.tiers.parameter.merge import MergeResult, Method, Space, merge
from memos.tiers.parameter.record import AdapterRecord
from memos.tiers.parameter.store import AdapterStore, Upload
from memos.tiers.parameter.train import TrainConfig, TrainProgress, TrainResult, train_lora

#: Gives a model (not one that is serving) and its tokenizer for a training run.
TrainingModel = Callable[[], tuple[nn.Module, Any]]


@dataclass(frozen=True, slots=True)
class MergeSource:
    """One input of a merge: ``name`` at ``version`` (default latest), with ``weight``."""

    name: str
    weight: float
    version: int | None = None


class ParameterTier:
    def __init__(self, store: AdapterStore, *, training_model: TrainingModel | None = None) -> None:
        self.store = store
        self.training_model = training_model
        self._train_lock = threading.Lock()

    # -- registration, look-up, deletion: the store's calls --------------------------------

    def upload(
        self, tenant: str, name: str, *, metadata: Mapping[str, str] | None = None
    ) -> Upload:
        return self.store.upload(tenant, name, metadata=metadata)

    def register_path(self, tenant: str, name: str, directory: Path | str) -> AdapterRecord:
        return self.store.register_path(tenant, name, directory)

    def register_files(self, tenant: str, name: str, files: Mapping[str, bytes]) -> AdapterRecord:
        return self.store.register_files(tenant, name, files)

    def list_adapters(self, tenant: str, *, all_versions: bool = False) -> list[AdapterRecord]:
        return self.store.list_adapters(tenant, all_versions=all_versions)

    def get(self, tenant: str, name: str, version: int | None = None) -> AdapterRecord:
        return self.store.get(tenant, name, version)

    def delete(self, tenant: str, name: str, version: int | None = None) -> list[AdapterRecord]:
        return self.store.delete(tenant, name, version)

    # -- fusion ----------------------------------------------------------------------------

    def merge(
        self,
        tenant: str,
        name: str,
        sources: Sequence[MergeSource],
        *,
        method: Method = "linear",
        space: Space = "factors",
        rank: int | None = None,
        density: float = 0.2,
    ) -> tuple[AdapterRecord, MergeResult]:
        """Merge ``sources`` into a new adapter ``name``; its parents are their version ids."""
        records = [self.store.get(tenant, s.name, s.version) for s in sources]
        result = merge(
            [self.store.load(r) for r in records],
            [s.weight for s in sources],
            method=method,
            space=space,
            rank=rank,
            density=density,
            max_rank=self.store.limits.max_rank,
            base_model=self.store.spec.model_id,
        )
        metadata = {
            **result.describe(),
            "merge.inputs": ",".join(
                f"{r.ref}*{s.weight:g}" for r, s in zip(records, sources, strict=True)
            ),
        }
        record = self.store.register_weights(
            tenant,
            name,
            result.weights,
            origin="merge",
            parents=[r.id for r in records],
            metadata=metadata,
        )
        return record, result

    # -- plaintext -> parameter ------------------------------------------------------------

    def train(
        self,
        tenant: str,
        name: str,
        texts: Sequence[str],
        memory_ids: Sequence[str],
        config: TrainConfig | None = None,
        *,
        progress: Callable[[TrainProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[AdapterRecord, TrainResult]:
        """Train an adapter on the memories' texts and register it (parents: the memories).

        Raises ``TrainingCancelled`` (nothing registered) when ``cancel`` is set.
        """
        if self.training_model is None:
            raise FailedPrecondition("this daemon has no model to train adapters on")
        # One run at a time: the training model is borrowed for the whole run.
        with self._train_lock:
            model, tokenizer = self.training_model()
            result = train_lora(
                model,
                tokenizer,
                texts,
                memory_ids,
                config,
                spec=self.store.spec,
                progress=progress,
                cancel=cancel,
            )
        record = self.store.register_weights(
            tenant,
            name,
            result.weights,
            origin="train",
            parents=result.parents,
            metadata=result.describe(),
        )
        return record, result
