"""Export a tenant's cubes to JSON Lines, and import them back through batched Puts.

An export line is a MemCube exactly as ``MemCube.model_dump_json`` writes it, embedding
included, so ``jq`` reads it and an import into a daemon with the same embedding model does
not embed again. An import line may also be a bare CubeInput (``{"text": ..., "tags": ...}``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from pydantic import ValidationError

from memos.client import MemosClient
from memos.cube import CubeInput, Kind, MemCube, State
from memos.errors import InvalidArgument, MemosError, NotFound

# A batch is also bounded in bytes, well under the 16 MiB message limit on both sides.
MAX_BATCH_BYTES = 4 * 1024 * 1024
EXPORT_PAGE_SIZE = 500
EXPORT_WORKERS = 8


@dataclass
class ExportSummary:
    cubes: int = 0
    with_embedding: int = 0


@dataclass
class ImportSummary:
    lines: int = 0
    imported: int = 0
    batches: int = 0
    reembedded: int = 0  # lines with no usable embedding: the daemon embedded their text
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


# ------------------------------------------------------------------------------- export


def _with_embedding(client: MemosClient, cube: MemCube) -> MemCube:
    if cube.plaintext is None or cube.plaintext.embedding or cube.state == State.TOMBSTONE:
        return cube
    try:
        full = client.get(cube.id, include_embedding=True)
    except NotFound:  # deleted since the page was listed
        return cube
    return full if full.version == cube.version else cube


def export_cubes(
    client: MemosClient,
    out: TextIO,
    *,
    namespaces: Sequence[str] = (),
    states: Sequence[State] = (State.ACTIVE,),
    embeddings: bool = True,
    on_cube: Callable[[], None] = lambda: None,
) -> ExportSummary:
    """Write every matching cube of the client's tenant to ``out``, one JSON object a line.

    Cubes that List returns without their embedding (a contract whose List cannot carry
    them) are fetched again with Get, several at a time.
    """
    summary = ExportSummary()
    token = ""
    with ThreadPoolExecutor(EXPORT_WORKERS) as pool:
        while True:
            page = client.list_page(
                namespaces=namespaces,
                states=states,
                page_size=EXPORT_PAGE_SIZE,
                page_token=token,
                include_embedding=embeddings,
            )
            cubes: Iterable[MemCube] = page.cubes
            if embeddings:
                cubes = pool.map(lambda c: _with_embedding(client, c), page.cubes)
            for cube in cubes:
                out.write(cube.model_dump_json() + "\n")
                summary.cubes += 1
                if cube.plaintext is not None and cube.plaintext.embedding:
                    summary.with_embedding += 1
                on_cube()
            token = page.next_page_token
            if not token:
                return summary


# ------------------------------------------------------------------------------- import


@dataclass(frozen=True)
class _Target:
    """What the receiving daemon embeds with: a line's embedding is kept only if it matches."""

    model: str
    dim: int


def _from_cube(
    doc: dict[str, Any], summary: ImportSummary, now: datetime
) -> tuple[CubeInput, str] | None:
    """An exported cube's input and embedding model; None (counted) when it cannot come back."""
    doc.pop("text", None)  # the convenience copy `memosctl get --json` adds
    cube = MemCube.model_validate(doc)
    if cube.state == State.TOMBSTONE:
        summary.skip("tombstone")
        return None
    if cube.kind != Kind.PLAINTEXT or cube.plaintext is None:
        summary.skip(f"{cube.kind} cube")
        return None
    ttl = 0
    if cube.expires_at is not None:
        left = (cube.expires_at - now).total_seconds()
        if left <= 0:
            summary.skip("expired")
            return None
        ttl = math.ceil(left)
    cube_input = CubeInput(
        namespace=cube.namespace,
        text=cube.plaintext.text,
        embedding=cube.plaintext.embedding,
        tags=cube.tags,
        metadata=cube.metadata,
        source=cube.source,
        ttl_seconds=ttl,
        pinned=cube.pinned,
        priority=cube.priority,
    )
    return cube_input, cube.plaintext.embedding_model


def parse_line(
    line: str, number: int, summary: ImportSummary, target: _Target, now: datetime
) -> tuple[str, CubeInput] | None:
    """The old id (or "") and the input for one line; None when the line is skipped."""
    try:
        doc = json.loads(line)
        if not isinstance(doc, dict):
            raise ValueError("a JSON object is expected")
        old_id = str(doc.get("id", ""))
        if "plaintext" in doc or "tenant" in doc:
            parsed = _from_cube(doc, summary, now)
            if parsed is None:
                return None
            cube_input, model = parsed
        else:
            doc.pop("id", None)
            cube_input, model = CubeInput.model_validate(doc), target.model
    except (ValueError, ValidationError) as exc:
        reason = " ".join(str(exc).split())
        raise InvalidArgument(f"line {number} is not a cube: {reason}") from None
    embedding = cube_input.embedding
    if embedding is not None and (model != target.model or len(embedding) != target.dim):
        embedding = None
    if embedding is None:
        summary.reembedded += 1
    return old_id, cube_input.model_copy(update={"embedding": embedding})


def import_cubes(
    client: MemosClient,
    lines: Iterable[str],
    *,
    batch_size: int = 256,
    namespace: str | None = None,
    reembed: bool = False,
    id_map: TextIO | None = None,
    on_line: Callable[[int], None] = lambda nbytes: None,
) -> ImportSummary:
    """Put every line's cube through PutBatch; the daemon assigns new ids.

    ``namespace`` moves every cube there; ``reembed`` drops the exported embeddings.
    ``id_map`` receives one ``{"old": ..., "new": ...}`` line per imported cube.
    """
    summary = ImportSummary()
    stats = client.stats()
    target = _Target(stats.embedding_model, stats.embedding_dim)
    now = datetime.now(UTC)
    batch: list[tuple[str, CubeInput]] = []
    batch_bytes = 0
    first_line = last_line = 1

    def flush() -> None:
        nonlocal batch, batch_bytes
        if not batch:
            return
        try:
            stored = client.put_batch([c for _, c in batch])
        except MemosError as exc:
            error = type(exc)(
                f"lines {first_line}-{last_line}: {exc} "
                f"({summary.imported} cubes imported before this batch)"
            )
            error.code = exc.code
            raise error from exc
        summary.imported += len(stored)
        summary.batches += 1
        if id_map is not None:
            for (old, _), cube in zip(batch, stored, strict=True):
                id_map.write(json.dumps({"old": old, "new": cube.id}) + "\n")
        batch, batch_bytes = [], 0

    for number, line in enumerate(lines, start=1):
        on_line(len(line.encode("utf-8")))
        if not line.strip():
            continue
        summary.lines += 1
        last_line = number
        if not batch:
            first_line = number
        parsed = parse_line(line, number, summary, target, now)
        if parsed is None:
            continue
        old_id, cube_input = parsed
        if namespace is not None:
            cube_input = cube_input.model_copy(update={"namespace": namespace})
        if reembed and cube_input.embedding is not None:
            cube_input = cube_input.model_copy(update={"embedding": None})
            summary.reembedded += 1
        batch.append((old_id, cube_input))
        batch_bytes += len(cube_input.text.encode("utf-8")) + 8 * len(cube_input.embedding or ())
        if len(batch) >= batch_size or batch_bytes >= MAX_BATCH_BYTES:
            flush()
    flush()
    return summary
