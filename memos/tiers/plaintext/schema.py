"""The Arrow schema of the plaintext table, and the conversion between its rows and MemCubes.

One row is one version of one cube. It holds the cube twice over, on purpose:

- ``record``: the whole cube as JSON, except its text and embedding, which have columns of
  their own. A cube is read back from ``text``, ``record`` (and ``vector`` when asked for):
  three column reads per row instead of twenty, which is most of a search's cost once the
  nearest rows are found.
- filter columns, each a plain Arrow column LanceDB evaluates before ranking: ``tenant``,
  ``id``, ``version``, ``is_latest`` (see ``store.py``), ``namespace``, ``kind``, ``state``,
  the timestamps, ``tags`` (a ``list<string>`` for ``array_has_all``), ``metadata_kv`` (a
  ``list<string>`` of ``key=value`` entries whose key has ``\\`` and ``=`` escaped, so that no
  two different pairs give the same entry), ``pinned``, ``priority``, ``size_bytes`` and
  ``embedding_model`` (the rows a re-embedding must visit).

Both are written from the same MemCube in the same commit, so they cannot disagree.
``text`` is a plain ``utf8`` column. ``embed_text`` is the cube's index text (its text
through its namespace's template) and ``situated_text`` that text with the cube's context
(``embedtext.py``): each has a full-text (BM25) index, and the situated text is what was
embedded, kept so that a re-embedding embeds the same text and a changed template is
noticed. ``vector`` is a
``fixed_size_list<float32>[dim]``, null for cubes without text (activation and parameter
records). The schema metadata records the embedding model and dimension the table was built
with.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from memos.cube import MemCube

SCHEMA_VERSION = "1"
META_SCHEMA = b"memos.schema_version"
META_MODEL = b"memos.embedding_model"
META_DIM = b"memos.embedding_dim"

KEY_COLUMNS = ("tenant", "id", "version")
TIMESTAMP = pa.timestamp("us", tz="UTC")
VECTOR = "vector"
EMBED_TEXT = "embed_text"
SITUATED_TEXT = "situated_text"
# What a cube is read back from.
CUBE_COLUMNS = ("text", "record")


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
        pa.field("tags", strings),
        pa.field("metadata_kv", strings),
        pa.field("created_at", TIMESTAMP, nullable=False),
        pa.field("updated_at", TIMESTAMP, nullable=False),
        pa.field("expires_at", TIMESTAMP),
        pa.field("pinned", pa.bool_()),
        pa.field("priority", pa.int64()),
        pa.field("size_bytes", pa.int64()),
        pa.field("embedding_model", pa.string()),
        pa.field("text", pa.string()),
        pa.field(EMBED_TEXT, pa.string()),
        pa.field(SITUATED_TEXT, pa.string()),
        pa.field("record", pa.string(), nullable=False),
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


def read_columns(*, with_embedding: bool) -> list[str]:
    """The columns ``rows_to_cubes`` needs (the vector only when asked for)."""
    return [*CUBE_COLUMNS, VECTOR] if with_embedding else list(CUBE_COLUMNS)


# --------------------------------------------------------------------------- metadata


def _escape_key(key: str) -> str:
    return key.replace("\\", "\\\\").replace("=", "\\=")


def metadata_entry(key: str, value: str) -> str:
    """The ``metadata_kv`` entry of one pair: unambiguous, since ``=`` in keys is escaped."""
    return f"{_escape_key(key)}={value}"


def metadata_entries(metadata: Mapping[str, str]) -> list[str]:
    return [metadata_entry(k, v) for k, v in sorted(metadata.items())]


# --------------------------------------------------------------------------- cubes -> rows


def stored_size(cube: MemCube, dim: int, has_vector: bool) -> int:
    """The bytes a version holds: text, vector, tags, metadata and payload."""
    size = len(cube.text.encode("utf-8"))
    size += dim * 4 if has_vector else 0
    size += sum(len(t.encode("utf-8")) for t in cube.tags)
    size += sum(len(k.encode("utf-8")) + len(v.encode("utf-8")) for k, v in cube.metadata.items())
    if cube.activation is not None:
        size += len(cube.activation.model_dump_json())
    if cube.parameter is not None:
        size += len(cube.parameter.model_dump_json())
    return size


def _record(cube: MemCube) -> str:
    if cube.plaintext is None:
        return cube.model_dump_json()
    bare = cube.plaintext.model_copy(update={"text": "", "embedding": None})
    return cube.model_copy(update={"plaintext": bare}).model_dump_json()


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
    embed_texts: Sequence[str] | None = None,
    situated_texts: Sequence[str] | None = None,
) -> pa.Table:
    """Rows for ``cubes``: ``vectors[i]`` is cube i's vector when ``present[i]``, embedded
    from ``situated_texts[i]``, whose own words are ``embed_texts[i]`` (default: the cube's
    text; the situated text defaults to the index text)."""
    dim = schema.field(VECTOR).type.list_size
    if vectors.shape != (len(cubes), dim) or present.shape != (len(cubes),):
        raise ValueError(f"expected ({len(cubes)}, {dim}) vectors, got {vectors.shape}")
    own: list[object] = list(embed_texts) if embed_texts is not None else [c.text for c in cubes]
    columns: dict[str, list[object]] = {
        "tenant": [c.tenant for c in cubes],
        "id": [c.id for c in cubes],
        "version": [c.version for c in cubes],
        "is_latest": list(latest),
        "namespace": [c.namespace for c in cubes],
        "kind": [c.kind.value for c in cubes],
        "state": [c.state.value for c in cubes],
        "tags": [list(c.tags) for c in cubes],
        "metadata_kv": [metadata_entries(c.metadata) for c in cubes],
        "created_at": [c.created_at for c in cubes],
        "updated_at": [c.updated_at for c in cubes],
        "expires_at": [c.expires_at for c in cubes],
        "pinned": [c.pinned for c in cubes],
        "priority": [c.priority for c in cubes],
        "size_bytes": [c.size_bytes for c in cubes],
        "embedding_model": [c.plaintext.embedding_model if c.plaintext else "" for c in cubes],
        "text": [c.text for c in cubes],
        EMBED_TEXT: own,
        SITUATED_TEXT: list(situated_texts) if situated_texts is not None else own,
        "record": [_record(c) for c in cubes],
    }
    arrays = [
        vector_column(vectors, present, dim)
        if name == VECTOR
        else pa.array(columns[name], type=schema.field(name).type)
        for name in schema.names
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


# --------------------------------------------------------------------------- rows -> cubes


def rows_to_cubes(table: pa.Table) -> list[MemCube]:
    """The cubes of ``table``'s rows, in order; the embedding is set when the vector is there."""
    return list(iter_cubes(table))


def iter_cubes(table: pa.Table) -> Iterator[MemCube]:
    """``rows_to_cubes`` one row at a time: a caller that stops early parses no more rows."""
    texts = table["text"].to_pylist()
    records = table["record"].to_pylist()
    if VECTOR in table.column_names:
        vectors: list[list[float] | None] = table[VECTOR].to_pylist()
    else:
        vectors = [None] * table.num_rows
    for text, record, vector in zip(texts, records, vectors, strict=True):
        cube = MemCube.model_validate_json(record)
        if cube.plaintext is not None:
            payload = cube.plaintext.model_copy(
                update={"text": text, "embedding": tuple(vector) if vector is not None else None}
            )
            cube = cube.model_copy(update={"plaintext": payload})
        yield cube


def embedding_matrix(cubes: Sequence[MemCube], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The cubes' own embeddings as an (n, dim) float32 matrix and a mask of which have one."""
    vectors = np.zeros((len(cubes), dim), dtype=np.float32)
    present = np.zeros(len(cubes), dtype=bool)
    for i, cube in enumerate(cubes):
        if cube.plaintext is not None and cube.plaintext.embedding is not None:
            vectors[i] = cube.plaintext.embedding
            present[i] = True
    return vectors, present
