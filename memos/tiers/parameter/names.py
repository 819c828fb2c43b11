"""Names that become paths: adapter names and the file names of an upload.

Both end up as path components on disk (and, through vLLM, as model names), so anything
that could leave the store's directory is refused before it is used: ``..``, absolute
paths, path separators, NUL and control characters.
"""

from __future__ import annotations

import re

from memos.errors import InvalidArgument

ADAPTER_NAME_RULE = "1-128 chars of letters, digits, '_', '.' or '-', starting alphanumeric"
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

#: The two files an adapter is made of (peft's names, which vLLM also expects).
WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
ADAPTER_FILES = (WEIGHTS_FILE, CONFIG_FILE)


def _refuse_path_tricks(what: str, value: str) -> None:
    if not value:
        raise InvalidArgument(f"{what} is empty")
    if "\x00" in value:
        raise InvalidArgument(f"{what} {value!r} contains a NUL byte")
    if value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value):
        raise InvalidArgument(f"{what} {value!r} is an absolute path: give a plain name")
    if ".." in value.replace("\\", "/").split("/"):
        raise InvalidArgument(f"{what} {value!r} contains '..' (path traversal)")
    if "/" in value or "\\" in value:
        raise InvalidArgument(f"{what} {value!r} contains a path separator: give a plain name")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidArgument(f"{what} {value!r} contains a control character")


def check_adapter_name(name: str) -> str:
    """``name`` if it is a valid adapter name, else InvalidArgument saying what is wrong."""
    _refuse_path_tricks("adapter name", name)
    if name in (".", "..") or ".." in name:
        raise InvalidArgument(f"adapter name {name!r} contains '..'")
    if not _ADAPTER_NAME.match(name):
        raise InvalidArgument(f"bad adapter name {name!r}: {ADAPTER_NAME_RULE}")
    return name


def check_file_name(name: str) -> str:
    """``name`` if it is one of the adapter's two files, else InvalidArgument."""
    _refuse_path_tricks("file name", name)
    if name not in ADAPTER_FILES:
        raise InvalidArgument(
            f"unexpected file {name!r}: an adapter is exactly {' and '.join(ADAPTER_FILES)}"
        )
    return name
