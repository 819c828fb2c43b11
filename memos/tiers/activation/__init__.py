"""The activation tier: KV caches cut into content-addressed chunks in RAM, Redis and disk."""

from memos.tiers.activation.chunk import Chunk, ChunkHeader, decode, encode
from memos.tiers.activation.errors import CorruptChunk
from memos.tiers.activation.keys import Adapter, ModelLayout, chain_hashes, none_hash
from memos.tiers.activation.levels import DiskLevel, Level, LevelStats, RamLevel, RedisLevel
from memos.tiers.activation.store import ActivationStore, StoreStats

__all__ = [
    "ActivationStore",
    "Adapter",
    "Chunk",
    "ChunkHeader",
    "CorruptChunk",
    "DiskLevel",
    "Level",
    "LevelStats",
    "ModelLayout",
    "RamLevel",
    "RedisLevel",
    "StoreStats",
    "chain_hashes",
    "decode",
    "encode",
    "none_hash",
]
