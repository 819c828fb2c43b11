"""Errors of the activation tier. None reaches an engine: the store turns each into a miss."""

from __future__ import annotations


class CorruptChunk(ValueError):
    """A chunk's bytes failed validation: bad magic, version, header, length, key or checksum."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
