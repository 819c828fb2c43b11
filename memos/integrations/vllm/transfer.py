"""Worker side: load chunks from the daemon into the paged buffer, and save new blocks.

Loads are synchronous: vLLM runs them before the step's forward pass, and whatever did not
arrive, arrived corrupt or late is reported as failed blocks, which the scheduler (with
``kv_load_failure_policy="recompute"``) recomputes. Saves are copied out of the buffer at the
end of the step (the copy is what lets vLLM free or reuse the blocks at once) and sent by a
background thread, best-effort: a full queue, a daemon that is down or refuses, all cost a
future miss and a log line, never a request.

Same host: with ``shared_dir`` (the engine's mount of the daemon's shared directory) a load
asks for files instead of bytes; each is read into a reused host buffer and copied into its
block after the same checks as streamed bytes (the chunk's checksum, its key, the layout). A file
that is missing, unreadable or fails a check is fetched again as bytes (the daemon is told, and
verifies its copy), so a bad file costs a fallback, never a wrong block.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from memos.client_activation import ActivationClient, LocalChunk
from memos.integrations.vllm.blocks import BlockCodec
from memos.tiers.activation.chunk import Chunk, decode, encode, torch_dtype
from memos.tiers.activation.keys import ModelLayout
from memos.tiers.activation.shared import read_shared_id

Fetched = tuple[bytes, bytes | LocalChunk]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadResult:
    loaded: int  # leading blocks copied into the buffer
    failed: tuple[int, ...]  # block ids left to recompute
    from_files: int = 0  # of ``loaded``, blocks read from the shared directory
    refetched: int = 0  # files that could not be used, fetched again as bytes
    holds: tuple[str, ...] = ()  # the daemon's holds on the files: release them


def load_blocks(
    client: ActivationClient,
    codec: BlockCodec,
    keys: Sequence[bytes],
    block_ids: Sequence[int],
    *,
    lease_id: str,
    deadline: float,
    shared_dir: Path | None = None,
) -> LoadResult:
    """Fetch ``keys`` and copy chunk ``i`` into block ``block_ids[i]``.

    A thread receives the stream while this one validates and copies what has arrived, so
    the transfer and the copies overlap. With a host buffer each chunk is copied straight
    from the received bytes into its block (one copy, no staging); on a device, chunks are
    staged in (pinned) host memory and copied over in one go. Stops at the first missing,
    corrupt or late chunk; every block from there on is failed.

    With ``shared_dir``, chunks the daemon names as files there are read from them (see the
    module's docstring); the result lists the daemon's holds on them, to release.
    """
    direct = codec.direct
    staged = None if direct else codec.staging(len(keys))
    dtype = torch_dtype(codec.model_layout.dtype)
    shared_id = read_shared_id(shared_dir) if shared_dir is not None else ""
    source: Iterator[Fetched]
    if shared_id:
        source = client.iter_fetch_shared(keys, shared_dir_id=shared_id, lease_id=lease_id)
    else:
        source = client.iter_fetch(keys, lease_id=lease_id)
    stream = _Prefetch(source)
    loaded = from_files = refetched = 0
    holds: set[str] = set()

    def place(chunk: Chunk) -> None:
        header = chunk.header
        if not header.matches(codec.model_layout) or header.tokens != header.chunk_tokens:
            raise ValueError("a chunk of another layout")
        if staged is None:
            kv = torch.frombuffer(chunk.payload, dtype=dtype).view(header.shape)
            codec.write_one(block_ids[loaded], kv)
        else:
            chunk.copy_into(staged[loaded])

    try:
        with warnings.catch_warnings():
            # The chunk's bytes are read-only and only ever read: torch need not warn.
            warnings.simplefilter("ignore", UserWarning)
            while loaded < len(keys):
                item = stream.next(deadline)
                if item is None:
                    raise LookupError(f"the daemon holds {loaded} of the blocks")
                key, got = item
                if isinstance(got, LocalChunk):
                    if shared_dir is None:
                        raise ValueError("the daemon named a file, but no directory is set")
                    # Here, not in the receiving thread: two threads taking turns at the GIL
                    # made loads slower (measured), though the checksum lets go of it.
                    file = _open_file(shared_dir, got, key)
                    holds.add(got.hold)
                    try:
                        if file.chunk is None:
                            raise ValueError(file.error)
                        place(file.chunk)
                        from_files += 1
                    except Exception as exc:
                        log.warning(
                            "memos connector: cannot use the shared file %s (%s): "
                            "fetching it as bytes",
                            got.path,
                            _reason(exc),
                        )
                        refetched += 1
                        place(decode(_refetch(client, key), key))
                    del file
                else:
                    place(decode(got, key))
                loaded += 1
    except Exception as exc:  # every failure becomes a recompute
        log.warning(
            "memos connector: load stopped after %d of %d blocks (%s): recomputing the rest",
            loaded,
            len(keys),
            _reason(exc),
        )
    finally:
        stream.close()
    if loaded and staged is not None:
        codec.write(block_ids[:loaded], staged[:loaded])
    return LoadResult(
        loaded, tuple(block_ids[loaded:]), from_files, refetched, tuple(h for h in holds if h)
    )


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


@dataclass(frozen=True, slots=True)
class _File:
    """A file the daemon named: read and verified (``chunk``), or why it is unusable."""

    local: LocalChunk
    chunk: Chunk | None
    error: str = ""


#: Per thread (loads run in the forward pass's thread): the buffer files are read into.
_buffers = threading.local()


def _file_buffer(size: int) -> memoryview:
    """A host buffer of ``size`` bytes, reused from file to file and load to load: each
    chunk is copied into its block before the next file is read into it."""
    buffer: bytearray | None = getattr(_buffers, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = bytearray(size)
        _buffers.buffer = buffer
    return memoryview(buffer)[:size]


def _open_file(root: Path, local: LocalChunk, key: bytes) -> _File:
    """Read the file the daemon named and verify it as streamed bytes are verified.

    Read into a reused buffer, not mapped: mapping and unmapping a file per chunk cost more
    than the copy (measured: about 16 ms for 32 MiB in 64 files read, 21 ms mapped with
    MAP_POPULATE, 34 ms over the stream), and the reused buffer stays in the CPU's cache for
    the copy into the block.
    """
    try:
        relative = PurePosixPath(local.path)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError("the daemon named a path outside its shared directory")
        view = _file_buffer(local.size)
        with open(root / relative, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if size != local.size or size == 0:
                raise ValueError(f"the file has {size} bytes, the daemon said {local.size}")
            read = 0
            while read < size:
                n = f.readinto(view[read:])
                if not n:
                    raise ValueError(f"the file ended after {read} of {size} bytes")
                read += n
        return _File(local, decode(view, key))
    except Exception as exc:
        return _File(local, None, _reason(exc))


def _refetch(client: ActivationClient, key: bytes) -> bytes:
    """One chunk as bytes, telling the daemon its file was unusable (it checks it)."""
    for _, item in client.iter_fetch_shared([key], shared_dir_id="", recheck=True):
        if isinstance(item, bytes):
            return item
    raise LookupError("the daemon no longer holds the chunk")


class _Prefetch:
    """Drains an iterator in a thread, so that receiving overlaps with consuming."""

    def __init__(self, source: Iterator[Fetched]) -> None:
        self._queue: queue.SimpleQueue[Fetched | BaseException | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(source,), name="memos-kv-fetch", daemon=True
        )
        self._thread.start()

    def _run(self, source: Iterator[Fetched]) -> None:
        try:
            for item in source:
                if self._stop.is_set():
                    break
                self._queue.put(item)
            self._queue.put(None)
        except BaseException as exc:  # handed to the consumer, which reports it
            self._queue.put(exc)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # ends the stream early (the daemon releases the lease)

    def next(self, deadline: float) -> Fetched | None:
        """The next item; None at the end; the source's error; TimeoutError past ``deadline``."""
        left = deadline - time.monotonic()
        try:
            if left <= 0:  # late even when the item is already here: the contract is time
                raise queue.Empty
            item = self._queue.get(timeout=left)
        except queue.Empty:
            raise TimeoutError("the fetch ran past load_timeout_s") from None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()


@dataclass(frozen=True, slots=True)
class SaveJob:
    keys: tuple[bytes, ...]
    blocks: torch.Tensor  # [n, layers, 2, H, N, head] on the host

    @property
    def nbytes(self) -> int:
        return self.blocks.numel() * self.blocks.element_size()


class Saver:
    """A background thread that encodes saved blocks as chunks and Stores them."""

    def __init__(
        self,
        client: Callable[[], ActivationClient],
        layout: ModelLayout,
        *,
        max_pending_bytes: int,
    ) -> None:
        self._client = client
        self._layout = layout
        self._max_pending = max_pending_bytes
        self._queue: queue.Queue[SaveJob | None] = queue.Queue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending_bytes = 0
        self._pending_jobs = 0
        self.stored = self.refused = self.dropped = self.failed = 0
        self._thread = threading.Thread(target=self._run, name="memos-kv-save", daemon=True)
        self._thread.start()

    def submit(self, job: SaveJob) -> bool:
        """Queue ``job``; False (dropped) when the queue holds too many bytes."""
        with self._lock:
            if self._pending_bytes + job.nbytes > self._max_pending:
                self.dropped += len(job.keys)
                return False
            self._pending_bytes += job.nbytes
            self._pending_jobs += 1
        self._queue.put(job)
        return True

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until every queued job was sent (or failed); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending_jobs == 0, timeout=timeout_s)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._send(job)
            finally:
                with self._idle:
                    self._pending_bytes -= job.nbytes
                    self._pending_jobs -= 1
                    self._idle.notify_all()

    def _send(self, job: SaveJob) -> None:
        try:
            chunks = [
                (key, encode(key, self._layout, job.blocks[i])) for i, key in enumerate(job.keys)
            ]
            result = self._client().store(chunks)
        except Exception as exc:  # best effort: a failed save is a future miss
            self.failed += len(job.keys)
            log.warning(
                "memos connector: saving %d blocks failed (%s)",
                len(job.keys),
                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
            )
            return
        self.stored += result.stored
        self.refused += result.refused

    def close(self, timeout_s: float = 5.0) -> None:
        self.wait_idle(timeout_s)
        self._queue.put(None)
        self._thread.join(timeout_s)
