"""The plaintext tier: cube versions in LanceDB, embedded with MiniLM, searched by meaning."""

from memos.tiers.plaintext.sql import CubeFilter
from memos.tiers.plaintext.store import PlaintextStats, PlaintextStore

__all__ = ["CubeFilter", "PlaintextStats", "PlaintextStore"]
