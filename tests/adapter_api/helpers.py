"""What the AdapterService tests share: the store's files on disk, and adapter files."""

from __future__ import annotations

from pathlib import Path

from memos.tiers.parameter.cubes import AdapterCubes
from memos.tiers.parameter.names import CONFIG_FILE, WEIGHTS_FILE
from memos.tiers.parameter.validate import validate_adapter
from memos.tiers.parameter.weights import LoraWeights
from tests.fixtures.daemon import ServerHandle


def adapters_of(handle: ServerHandle) -> AdapterCubes:
    """The daemon's own parameter tier (to look at its disk and its jobs)."""
    tier = handle.server.kernel().parameter
    assert tier is not None
    return tier


def store_tree(handle: ServerHandle) -> set[str]:
    """Every file and folder under the daemon's adapter store (its lock file aside)."""
    root = handle.settings.adapters_dir
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.name != ".lock"}


def files_of(weights: LoraWeights) -> dict[str, bytes]:
    return {CONFIG_FILE: weights.config_bytes(), WEIGHTS_FILE: weights.weights_bytes()}


def read_back(path: str, handle: ServerHandle) -> LoraWeights:
    """The weights stored at an adapter's path, read as the daemon would read them."""
    store = adapters_of(handle).tier.store
    folder = Path(path)
    return validate_adapter(
        (folder / CONFIG_FILE).read_bytes(), folder / WEIGHTS_FILE, store.spec, store.limits
    )
