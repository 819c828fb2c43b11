"""The activation tier as the settings describe it: its levels, its store, its engine.

Levels, fastest first: RAM, the shared directory (``shared.py``, when set), local disk, then
Redis. Local disk comes before Redis because a local read (usually from the page cache) costs
less than a network round trip, and because what this daemon wrote itself is on its own disk
anyway; Redis is where a daemon finds what the others computed. A budget of 0 leaves a level
out; Redis is used when ``redis_url`` is set.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from memos.config import Settings
from memos.errors import FailedPrecondition
from memos.tiers.activation.keys import none_hash
from memos.tiers.activation.levels import DiskLevel, Level, RamLevel, RedisLevel
from memos.tiers.activation.shared import SharedDir
from memos.tiers.activation.store import ActivationStore
from memos.tiers.activation.tier import ActivationTier
from scheduler import make_policy

if TYPE_CHECKING:
    from memos.engines.hf import HFEngine

log = logging.getLogger(__name__)

#: The shared directory's level in the store.
SHARED_LEVEL = "shared"

NO_MODEL_HINT = (
    "this daemon has no model to prefill with: set engine.model_path to a local Hugging Face "
    'model directory ([engine] model_path = "..." in the config file, or '
    "MEMOS_ENGINE__MODEL_PATH) and restart memosd"
)


def build_levels(settings: Settings) -> list[Level]:
    act = settings.activation
    levels: list[Level] = []
    if act.ram_budget_bytes > 0:
        levels.append(
            RamLevel(act.ram_budget_bytes, policy=make_policy(act.policy, act.ram_budget_bytes))
        )
    if act.shared_dir is not None:
        # Memory-backed in practice (tmpfs, a Memory emptyDir): right after RAM.
        levels.append(
            DiskLevel(
                act.shared_dir,
                act.shared_budget_bytes,
                policy=make_policy(act.policy, act.shared_budget_bytes),
                name=SHARED_LEVEL,
            )
        )
    if act.disk_budget_bytes > 0:
        levels.append(
            DiskLevel(
                settings.activation_dir,
                act.disk_budget_bytes,
                policy=make_policy(act.policy, act.disk_budget_bytes),
                durable=act.disk_durable,
            )
        )
    if settings.redis_url and act.redis_budget_bytes > 0:
        levels.append(
            RedisLevel(
                settings.redis_url,
                budget_bytes=act.redis_budget_bytes,
                configure_server=act.redis_configure_server,
                # The cluster leader's policy evicts within the budget; maxmemory, set above
                # it, is the safety net (see levels/redis.py).
                maxmemory_bytes=(
                    int(act.redis_budget_bytes * (1 + act.redis_maxmemory_headroom))
                    if act.redis_policy
                    else act.redis_budget_bytes
                ),
                namespace=act.redis_key_prefix.encode(),
                ttl_s=act.redis_ttl_s,
                connect_timeout_s=act.redis_connect_timeout_s,
                op_timeout_s=act.redis_op_timeout_s,
                retry_after_s=act.redis_retry_after_s,
            )
        )
    if not levels:
        raise ValueError(
            "every activation level is off: give activation.ram_budget_bytes or "
            "activation.disk_budget_bytes a size, or set redis_url"
        )
    return levels


def build_store(settings: Settings) -> ActivationStore:
    store = ActivationStore(build_levels(settings))
    log.info(
        "activation store open",
        extra={
            "levels": [level.name for level in store.levels],
            "dir": str(settings.activation_dir),
        },
    )
    return store


def load_engine(settings: Settings) -> HFEngine:
    """The daemon's Hugging Face engine; FailedPrecondition, saying what to set, without one."""
    engine_settings = settings.engine
    path = engine_settings.model_path
    if path is None:
        raise FailedPrecondition(NO_MODEL_HINT)
    if not path.is_dir():
        raise FailedPrecondition(
            f"engine.model_path {path} is not a directory: point it at a local Hugging Face "
            "model directory (config.json, weights and tokenizer files)"
        )
    if engine_settings.device != "cpu":
        raise FailedPrecondition(
            f"engine.device={engine_settings.device!r}: the daemon's Hugging Face engine runs "
            "on cpu only; prefill on a GPU goes through a serving engine (vLLM)"
        )
    from memos.engines.hf import HFEngine

    try:
        engine = HFEngine.load(
            path,
            model_id=engine_settings.model_id,
            dtype=engine_settings.dtype,
            chunk_tokens=settings.activation.chunk_tokens,
            none_hash=none_hash(settings.activation.none_hash_seed),
        )
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(f"cannot load the model at {path}: {exc}") from exc
    log.info(
        "engine loaded",
        extra={"model_path": str(path), "model_id": engine.layout.model_id},
    )
    return engine


def open_tier(settings: Settings) -> ActivationTier:
    """The store, and the engine loaded on first use (a daemon without Migrate calls never
    pays for the model)."""
    store = build_store(settings)
    shared = None
    if settings.activation.shared_dir is not None:
        level = store.level(SHARED_LEVEL)
        assert isinstance(level, DiskLevel)
        shared = SharedDir(level, max_holds=settings.activation.max_pin_leases)
        log.info("activation shared dir", extra={"dir": str(level.root)})
    return ActivationTier(
        store,
        settings.activation,
        engine_loader=lambda: load_engine(settings),
        shared=shared,
    )
