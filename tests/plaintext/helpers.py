"""Cube builders for the plaintext tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np

from memos.cube import MemCube, PlaintextPayload, utcnow
from memos.ids import new_id

DIM = 384


def cube(
    text: str,
    *,
    tenant: str = "acme",
    embedding: np.ndarray | None = None,
    created_at: datetime | None = None,
    ttl: timedelta | None = None,
    **fields: Any,
) -> MemCube:
    now = created_at or utcnow()
    return MemCube(
        id=new_id(),
        tenant=tenant,
        created_at=now,
        updated_at=now,
        expires_at=now + ttl if ttl is not None else None,
        plaintext=PlaintextPayload(
            text=text,
            embedding=tuple(float(x) for x in embedding) if embedding is not None else None,
        ),
        **fields,
    )


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    out: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def bump(change: dict[str, Any]) -> Any:
    """An update's change(): the next version with ``change`` applied."""

    def _change(latest: MemCube) -> MemCube:
        updates = {"version": latest.version + 1, "updated_at": utcnow(), **change}
        return latest.model_copy(update=updates)

    return _change


def new_text(text: str) -> Any:
    return bump({"plaintext": PlaintextPayload(text=text)})
