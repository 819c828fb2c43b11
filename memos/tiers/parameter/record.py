"""One stored version of an adapter, as the index keeps it and the API returns it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from memos.cube import ParameterPayload

Origin = Literal["upload", "merge", "train"]


@dataclass(frozen=True, slots=True)
class AdapterRecord:
    """Version ``version`` of adapter ``name`` in ``tenant``: immutable once written.

    ``digest`` is the content address (sha256 over the config and the weights) and ``path``
    the blob directory holding them; a new weight is a new digest, so a new path (vLLM keys
    its prefix cache on the adapter path: reusing one would serve stale KV).
    """

    id: str
    tenant: str
    name: str
    version: int
    digest: str
    path: str
    base_model: str
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    modules: int
    dtype: str
    size_bytes: int
    origin: Origin
    created_at: str
    parents: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """``name@vN``: the adapter's name in an engine (unique per version)."""
        return f"{self.name}@v{self.version}"

    def payload(self) -> ParameterPayload:
        """The MemCube payload of this version."""
        return ParameterPayload(
            base_model_fingerprint=self.base_model,
            weights_sha256=self.digest,
            rank=self.rank,
            target_modules=self.target_modules,
            uri=self.path,
        )

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["target_modules"] = list(self.target_modules)
        doc["parents"] = list(self.parents)
        doc["metadata"] = dict(self.metadata)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> AdapterRecord:
        return cls(
            **{
                **doc,
                "target_modules": tuple(doc["target_modules"]),
                "parents": tuple(doc.get("parents", ())),
                "metadata": dict(doc.get("metadata", {})),
            }
        )
