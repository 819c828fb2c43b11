"""A strict reader of a safetensors file's header, before any tensor is touched.

Layout: 8 bytes little-endian header length N, N bytes of UTF-8 JSON, then the data. Each
JSON entry but ``__metadata__`` is ``{"dtype", "shape", "data_offsets": [begin, end]}``,
offsets relative to the data section. The format requires the entries to tile the data
section exactly (no holes, no overlap); a file that breaks that, or whose byte counts do
not match dtype x shape, is refused with the reason, so a truncated or crafted upload never
reaches the tensor parser.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memos.errors import InvalidArgument

#: Bytes per element of every dtype safetensors defines.
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "F64": 8,
    "I64": 8,
    "U64": 8,
}
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True, slots=True)
class Header:
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int
    file_size: int


def read_header(path: Path) -> Header:
    """Parse and check ``path``'s header against its size; InvalidArgument on any defect."""
    size = path.stat().st_size
    if size < 8:
        raise InvalidArgument(f"bad safetensors file: {size} bytes, shorter than its 8-byte prefix")
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise InvalidArgument(
                f"bad safetensors file: header length {length} exceeds the file ({size} bytes)"
            )
        raw = f.read(length)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"bad safetensors file: header is not UTF-8 JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("bad safetensors file: header is not a JSON object")
    metadata = _metadata(doc.pop("__metadata__", None))
    data_len = size - 8 - length
    entries = [_entry(name, spec) for name, spec in doc.items()]
    at = 0
    for entry in sorted(entries, key=lambda e: (e.begin, e.end)):
        if entry.begin != at:
            problem = "overlaps another" if entry.begin < at else "leaves a hole before it"
            raise InvalidArgument(f"bad safetensors file: tensor {entry.name!r} {problem}")
        at = entry.end
    if at != data_len:
        raise InvalidArgument(
            f"bad safetensors file: tensors cover {at} bytes of a {data_len}-byte data section"
            " (truncated or padded)"
        )
    return Header({e.name: e for e in entries}, metadata, 8 + length, size)


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidArgument("bad safetensors file: __metadata__ must map strings to strings")
    return dict(value)


def _entry(name: str, spec: Any) -> TensorEntry:
    where = f"bad safetensors file: tensor {name!r}"
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        raise InvalidArgument(f"{where} needs exactly dtype, shape and data_offsets")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise InvalidArgument(f"{where} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidArgument(f"{where} has a malformed shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise InvalidArgument(f"{where} has malformed data_offsets {offsets!r}")
    expected = math.prod(shape) * DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != expected:
        raise InvalidArgument(
            f"{where} spans {offsets[1] - offsets[0]} bytes, but {dtype} x {shape} needs {expected}"
        )
    return TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1])
