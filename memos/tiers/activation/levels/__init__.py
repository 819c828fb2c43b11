"""Storage levels of the activation tier, one interface (``Level``), fastest first in a store."""

from memos.tiers.activation.levels.base import Level, LevelStats
from memos.tiers.activation.levels.disk import DiskLevel
from memos.tiers.activation.levels.ram import RamLevel
from memos.tiers.activation.levels.redis import RedisLevel

__all__ = ["DiskLevel", "Level", "LevelStats", "RamLevel", "RedisLevel"]
