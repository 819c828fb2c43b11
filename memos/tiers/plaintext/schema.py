"""The Arrow schema of the plaintext table, and the conversion between its rows and MemCubes.

One row is one version of one cube. Every column a filter needs is a plain Arrow column, so a
filter is a SQL predicate LanceDB can evaluate before ranking:

- ``tags`` is a ``list<string>`` (``array_has_all``); metadata is stored twice: as JSON for full
  fidelity and as ``metadata_kv``, a ``list<string>`` of ``key=value`` entries whose key has
  ``\\`` and ``=`` escaped, so that no two different (key, value) pairs give the same entry.
- ``text`` is a plain ``utf8`` column: a full-text (BM25) index can be built on it later
  without touching the data.
- ``vector`` is a ``fixed_size_list<float32>[dim]``, null for cubes that carry no text
  (activation and parameter records); their payload is kept as JSON in ``payload_json``.
- ``is_latest`` marks the one current version of each (tenant, id); see ``store.py``.

The table's schema metadata records the embedding model and dimension it was built with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from memos.cube import (
    AccessStats,
    ActivationPayload,
    Kind,
    MemCube,
    ParameterPayload,
    PlaintextPayload,
    Source,
    State,
)

SCHEMA_VERSION = "1"
META_SCHEMA = b"memos.schema_version"
META_MODEL = b"memos.embedding_model"
META_DIM = b"memos.embedding_dim"

KEY_COLUMNS = ("tenant", "id", "version")
TIMESTAMP = pa.timestamp("us", tz="UTC")
VECTOR = "vector"


def table_schema(dim: int, model_name: str) -> pa.Schema:
    strings = pa.list_(pa.string())
    fields = [
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("is_latest", pa.bool_(), nullable=False),
        pa.field("namespace", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("state", pa.string(), nullable=False),
        pa.field("parent_ids", strings),
        pa.field("source_writer", pa.string()),
        pa.field("source_session_id", pa.string()),
        pa.field("source_message_id", pa.string()),
        pa.field("tags", strings),
        pa.field("created_at", TIMESTAMP, nullable=False),
        pa.field("updated_at", TIMESTAMP, nullable=False),
        pa.field("expires_at", TIMESTAMP),
        pa.field("pinned", pa.bool_()),
        pa.field("priority", pa.int64()),
        pa.field("size_bytes", pa.int64()),
        pa.field("access_count", pa.int64()),
        pa.field("access_last", TIMESTAMP),
        pa.field("access_frequency", pa.float64()),
        pa.field("metadata_json", pa.string()),
        pa.field("metadata_kv", strings),
        pa.field("text", pa.string()),
        pa.field("embedding_model", pa.string()),
        pa.field("payload_json", pa.string()),
        pa.field(VECTOR, pa.list_(pa.float32(), dim)),
    ]
    return pa.schema(
        fields,
        metadata={
            META_SCHEMA: SCHEMA_VERSION.encode(),
            META_MODEL: model_name.encode(),
            META_DIM: str(dim).encode(),
        },
    )


def schema_model(schema: pa.Schema) -> tuple[str, int]:
    """The (embedding model, dimension) a table was created with."""
    meta = schema.metadata or {}
    dim = schema.field(VECTOR).type.list_size
    return meta.get(META_MODEL, b"").decode(), int(dim)


# --------------------------------------------------------------------------- metadata


def _escape_key(key: str) -> str:
    return key.replace("\\", "\\\\").replace("=", "\\=")


def metadata_entry(key: str, value: str) -> str:
    """The ``metadata_kv`` entry of one pair: unambiguous, since ``=`` in keys is escaped."""
    return f"{_escape_key(key)}={value}"


def metadata_entries(metadata: Mapping[str, str]) -> list[str]:
    return [metadata_entry(k, v) for k, v in sorted(metadata.items())]


# --------------------------------------------------------------------------- cubes -> rows


def _payload_json(cube: MemCube) -> str:
    if cube.activation is not None:
        return cube.activation.model_dump_json()
    if cube.parameter is not None:
        return cube.parameter.model_dump_json()
    return ""


def stored_size(cube: MemCube, dim: int, has_vector: bool) -> int:
    """The bytes a version holds: text, vector, tags, metadata and payload."""
    size = len(cube.text.encode("utf-8"))
    size += dim * 4 if has_vector else 0
    size += sum(len(t.encode("utf-8")) for t in cube.tags)
    size += sum(len(k.encode("utf-8")) + len(v.encode("utf-8")) for k, v in cube.metadata.items())
    size += len(_payload_json(cube).encode("utf-8"))
    return size


def vector_column(vectors: np.ndarray, present: np.ndarray, dim: int) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    mask = None if bool(present.all()) else pa.array(~present)
    return pa.FixedSizeListArray.from_arrays(flat, dim, mask=mask)


def cubes_to_table(
    cubes: Sequence[MemCube],
    vectors: np.ndarray,
    present: np.ndarray,
    latest: Sequence[bool],
    schema: pa.Schema,
) -> pa.Table:
    """Rows for ``cubes``: ``vectors[i]`` is cube i's vector when ``present[i]``."""
    dim = schema.field(VECTOR).type.list_size
    if vectors.shape != (len(cubes), dim) or present.shape != (len(cubes),):
        raise ValueError(f"expected ({len(cubes)}, {dim}) vectors, got {vectors.shape}")
    columns: dict[str, Any] = {
        "tenant": [c.tenant for c in cubes],
        "id": [c.id for c in cubes],
        "version": [c.version for c in cubes],
        "is_latest": list(latest),
        "namespace": [c.namespace for c in cubes],
        "kind": [c.kind.value for c in cubes],
        "state": [c.state.value for c in cubes],
        "parent_ids": [list(c.parent_ids) for c in cubes],
        "source_writer": [c.source.writer for c in cubes],
        "source_session_id": [c.source.session_id for c in cubes],
        "source_message_id": [c.source.message_id for c in cubes],
        "tags": [list(c.tags) for c in cubes],
        "created_at": [c.created_at for c in cubes],
        "updated_at": [c.updated_at for c in cubes],
        "expires_at": [c.expires_at for c in cubes],
        "pinned": [c.pinned for c in cubes],
        "priority": [c.priority for c in cubes],
        "size_bytes": [c.size_bytes for c in cubes],
        "access_count": [c.access.count for c in cubes],
        "access_last": [c.access.last_access for c in cubes],
        "access_frequency": [c.access.decayed_frequency for c in cubes],
        "metadata_json": [
            json.dumps(c.metadata, sort_keys=True, ensure_ascii=False) for c in cubes
        ],
        "metadata_kv": [metadata_entries(c.metadata) for c in cubes],
        "text": [c.text for c in cubes],
        "embedding_model": [c.plaintext.embedding_model if c.plaintext else "" for c in cubes],
        "payload_json": [_payload_json(c) for c in cubes],
    }
    arrays = [
        vector_column(vectors, present, dim)
        if name == VECTOR
        else pa.array(columns[name], type=schema.field(name).type)
        for name in schema.names
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


# --------------------------------------------------------------------------- rows -> cubes


def row_columns(schema: pa.Schema, *, with_embedding: bool) -> list[str]:
    """The columns ``rows_to_cubes`` needs (the vector only when asked for)."""
    return [n for n in schema.names if with_embedding or n != VECTOR]


def _cube(row: Mapping[str, Any]) -> MemCube:
    kind = Kind(row["kind"])
    payload: dict[str, Any] = {}
    if kind == Kind.PLAINTEXT:
        vector = row.get(VECTOR)
        payload["plaintext"] = PlaintextPayload(
            text=row["text"],
            embedding=tuple(vector) if vector is not None else None,
            embedding_model=row["embedding_model"] or "",
        )
    elif kind == Kind.ACTIVATION:
        payload["activation"] = ActivationPayload.model_validate_json(row["payload_json"])
    else:
        payload["parameter"] = ParameterPayload.model_validate_json(row["payload_json"])
    return MemCube(
        id=row["id"],
        tenant=row["tenant"],
        namespace=row["namespace"],
        kind=kind,
        state=State(row["state"]),
        version=row["version"],
        parent_ids=tuple(row["parent_ids"] or ()),
        source=Source(
            writer=row["source_writer"] or "",
            session_id=row["source_session_id"] or "",
            message_id=row["source_message_id"] or "",
        ),
        tags=tuple(row["tags"] or ()),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        expires_at=row["expires_at"],
        pinned=bool(row["pinned"]),
        priority=row["priority"] or 0,
        size_bytes=row["size_bytes"] or 0,
        access=AccessStats(
            count=row["access_count"] or 0,
            last_access=row["access_last"],
            decayed_frequency=row["access_frequency"] or 0.0,
        ),
        metadata=json.loads(row["metadata_json"]) if row["metadata_json"] else {},
        **payload,
    )


def rows_to_cubes(table: pa.Table) -> list[MemCube]:
    """The cubes of ``table``'s rows, in order; the embedding is set when the vector is there."""
    return [_cube(row) for row in table.to_pylist()]


def embedding_matrix(cubes: Sequence[MemCube], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The cubes' own embeddings as an (n, dim) float32 matrix and a mask of which have one."""
    vectors = np.zeros((len(cubes), dim), dtype=np.float32)
    present = np.zeros(len(cubes), dtype=bool)
    for i, cube in enumerate(cubes):
        if cube.plaintext is not None and cube.plaintext.embedding is not None:
            vectors[i] = cube.plaintext.embedding
            present[i] = True
    return vectors, present
