"""The event bridge: local cube changes go to a Redis Stream, other replicas' come back.

One stream holds every tenant's events (the tenant is inside the cube), so a replica needs one
reader whatever its tenants. Each entry names the replica that wrote it; a replica skips its own
entries, since its hub delivered them already. The stream is trimmed to about
``stream_maxlen`` entries: it is a live feed, not a log to replay (clients resume with List).

Entry fields: ``r`` replica id, ``t`` change type, ``at`` microseconds since the epoch,
``c`` the cube as protobuf bytes (without its embedding, as Watch sends it).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import UTC, datetime
from typing import cast

import redis

from memos.cluster.connection import Outage, take_batch
from memos.config import ClusterSettings
from memos.cube import from_proto, to_proto
from memos.events import ChangeEvent, ChangeType, EventHub
from memos.v1 import memcube_pb2 as pb

log = logging.getLogger(__name__)

_BATCH = 256

_Entries = list[tuple[bytes, dict[bytes, bytes]]]


def encode(event: ChangeEvent, replica_id: str) -> dict[bytes, bytes]:
    at_us = int(event.at.timestamp() * 1_000_000)
    return {
        b"r": replica_id.encode(),
        b"t": event.type.value.encode(),
        b"at": str(at_us).encode(),
        b"c": to_proto(event.cube).SerializeToString(),
    }


def decode(fields: dict[bytes, bytes]) -> tuple[str, ChangeEvent]:
    """The writing replica and the event; raises ValueError (or pydantic's) when malformed."""
    replica = fields[b"r"].decode()
    change = ChangeType(fields[b"t"].decode())
    at = datetime.fromtimestamp(int(fields[b"at"]) / 1_000_000, tz=UTC)
    cube = from_proto(pb.MemCube.FromString(fields[b"c"]))
    return replica, ChangeEvent(change, cube, at)


def _id_tuple(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


class EventBridge:
    """Appends this replica's events to the stream and publishes the others' into the hub."""

    def __init__(
        self,
        writer: redis.Redis,
        reader: redis.Redis,
        hub: EventHub,
        replica_id: str,
        settings: ClusterSettings,
    ) -> None:
        self.stream = f"{settings.key_prefix}events"
        self.replica_id = replica_id
        self.dropped = 0  # local events that never reached the stream (outbox full)
        self.relayed = 0  # remote events published into the hub
        self.overruns = 0  # times the stream was trimmed past this reader (watches cut off)
        # The last entry read; None: start at the stream's tail.
        self.position: bytes | None = None
        self._added = 0  # the stream's entries-added count at ``position``
        self._writer = writer
        self._reader = reader
        self._hub = hub
        self._settings = settings
        self._outbox: queue.Queue[ChangeEvent] = queue.Queue(maxsize=settings.outbox_size)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._write_loop, name="cluster-events-out", daemon=True),
            threading.Thread(target=self._read_loop, name="cluster-events-in", daemon=True),
        ]
        self._write_outage = Outage(
            "event stream, writing", "Watch on other replicas misses this replica's changes"
        )
        self._read_outage = Outage(
            "event stream, reading", "Watch here sees this replica's changes only"
        )

    def start(self) -> None:
        self._hub.add_listener(self._enqueue)
        for t in self._threads:
            t.start()

    def close(self, timeout_s: float = 5.0) -> None:
        self._hub.remove_listener(self._enqueue)
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout_s)

    # ------------------------------------------------------------------ out

    def _enqueue(self, event: ChangeEvent) -> None:
        try:
            self._outbox.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error(
                    "cluster event outbox full: events dropped, other replicas' watches miss them",
                    extra={"dropped": self.dropped},
                )

    def _write_loop(self) -> None:
        batch: list[ChangeEvent] = []
        # On close, keep flushing what is queued for a moment, then give up.
        flush_until: float | None = None
        while True:
            if self._stop.is_set():
                if flush_until is None:
                    flush_until = time.monotonic() + 1.0
                if (not batch and self._outbox.empty()) or time.monotonic() > flush_until:
                    return
            if not batch:
                batch = take_batch(self._outbox, _BATCH)
                if not batch:
                    continue
            try:
                pipe = self._writer.pipeline(transaction=True)
                for event in batch:
                    pipe.xadd(
                        self.stream,
                        encode(event, self.replica_id),  # type: ignore[arg-type]
                        maxlen=self._settings.stream_maxlen,
                        approximate=True,
                    )
                pipe.execute()
                batch = []
                self._write_outage.recovered()
            except redis.RedisError as exc:
                # The batch is kept (MULTI made it all-or-nothing) and retried.
                self._write_outage.failed(exc)
                self._stop.wait(self._settings.retry_s)

    # ------------------------------------------------------------------ in

    def _read_loop(self) -> None:
        full = False
        while not self._stop.is_set():
            try:
                if self.position is None:
                    # Start at the tail: a new replica sees changes from now on, like a Watch.
                    self._start_at_tail()
                assert self.position is not None
                if not full:
                    # Only waits for news; the entries come from the snapshot below.
                    self._reader.xread(
                        {self.stream: self.position}, count=1, block=self._settings.read_block_ms
                    )
                entries, missed = self._snapshot(self.position)
                self._read_outage.recovered()
            except redis.RedisError as exc:
                self._read_outage.failed(exc)
                self._stop.wait(self._settings.retry_s)
                continue
            if missed:
                self.overruns += 1
                log.error(
                    "cluster events lost before this replica read them: watches cut off",
                    extra={"stream_maxlen": self._settings.stream_maxlen, "why": missed},
                )
                self._hub.cut_off(
                    f"this replica missed cluster events ({missed}); "
                    "resume with List and a new Watch"
                )
            full = len(entries) >= _BATCH
            for entry_id, fields in entries:
                self.position = entry_id
                self._added += 1
                self._relay(entry_id, fields)

    def _start_at_tail(self) -> None:
        pipe = self._reader.pipeline(transaction=True)
        pipe.xinfo_stream(self.stream)
        pipe.xrevrange(self.stream, count=1)
        info, last = pipe.execute(raise_on_error=False)
        if isinstance(info, redis.ResponseError):  # no stream yet
            self.position, self._added = b"0-0", 0
            return
        for result in (info, last):
            if isinstance(result, Exception):
                raise result
        self.position = cast(_Entries, last)[0][0] if last else b"0-0"
        self._added = int(info["entries-added"])

    def _snapshot(self, after: bytes) -> tuple[_Entries, str]:
        """The entries after ``after``, read atomically with the stream's counters, and why
        events were missed ("" when none were). ``_added`` counts the entries ever added up to
        ``after``: whatever was added since and is no longer there was trimmed unread."""
        pipe = self._reader.pipeline(transaction=True)
        pipe.xinfo_stream(self.stream)
        pipe.xread({self.stream: after}, count=_BATCH)
        info, reply = pipe.execute(raise_on_error=False)
        if isinstance(info, redis.ResponseError):  # no stream (yet, or Redis lost it)
            return [], ""
        for result in (info, reply):
            if isinstance(result, Exception):
                raise result
        batch = cast(list[tuple[bytes, _Entries]] | None, reply)
        entries: _Entries = batch[0][1] if batch else []
        added, length = int(info["entries-added"]), int(info["length"])
        first = info.get("recorded-first-entry-id") or b"0-0"
        if added < self._added:
            # Redis restarted without this stream's history: read the new one from its start.
            self.position, self._added = b"0-0", 0
            return [], "Redis lost the event stream"
        if _id_tuple(first) > _id_tuple(after) and added - self._added > length:
            lost = added - self._added - length
            self._added = added - length
            return entries, f"{lost} trimmed past cluster.stream_maxlen before they were read"
        return entries, ""

    def _relay(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            replica, event = decode(fields)
        except Exception:
            log.exception("malformed cluster event skipped", extra={"entry": entry_id.decode()})
            return
        if replica == self.replica_id:
            return
        self.relayed += 1
        self._hub.publish(event, remote=True)
