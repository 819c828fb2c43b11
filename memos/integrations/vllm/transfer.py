"""Worker side: load chunks from the daemon into the paged buffer, and save new blocks.

Loads are synchronous: vLLM runs them before the step's forward pass, and whatever did not
arrive, arrived corrupt or late is reported as failed blocks, which the scheduler (with
``kv_load_failure_policy="recompute"``) recomputes. Saves are copied out of the buffer at the
end of the step (the copy is what lets vLLM free or reuse the blocks at once) and sent by a
background thread, best-effort: a full queue, a daemon that is down or refuses, all cost a
future miss and a log line, never a request.

Same host: with ``shared_dir`` (the engine's mount of the daemon's shared directory) a load
reads files instead of receiving bytes: those the scheduler's Lookup already named (no Fetch
at all), then those a Fetch names for the rest. Into a host buffer (CPU), each file is read
straight into its block: one ``readv`` whose buffers are the chunk's header and the runs of
the block its payload fills, then checked where it landed as streamed bytes are (the chunk's
checksum, its key, the layout). Into a device buffer, files are read a batch at a time into
one reused host buffer, checked there, and copied over. A file that is missing, unreadable or
fails a check is fetched again as bytes (the daemon is told, and verifies its copy), which
overwrites whatever the file left in the block, so a bad file costs a fallback, never a wrong
block.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from memos.client_activation import ActivationClient, LocalChunk
from memos.integrations.vllm.blocks import BlockCodec
from memos.tiers.activation.chunk import (
    HEADER_BYTES,
    Chunk,
    ChunkHeader,
    decode,
    decode_header,
    encode,
    torch_dtype,
    verify_checksum,
)
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
    fetched: bool = True  # whether a Fetch was needed (not when the Lookup's files did)


def load_blocks(
    client: ActivationClient,
    codec: BlockCodec,
    keys: Sequence[bytes],
    block_ids: Sequence[int],
    *,
    lease_id: str,
    deadline: float,
    shared_dir: Path | None = None,
    files: Sequence[LocalChunk] = (),
) -> LoadResult:
    """Fetch ``keys`` and copy chunk ``i`` into block ``block_ids[i]``.

    ``files``: the shared files of the leading keys, as the scheduler's Lookup named them
    (under ``lease_id``, which then also holds them): they are read with no round trip to
    the daemon, and only the keys after them are fetched.

    A thread receives the stream while this one validates and copies what has arrived, so
    the transfer and the copies overlap. With a host buffer each chunk is copied straight
    from the received bytes into its block (one copy, no staging); on a device, chunks are
    staged in (pinned) host memory and copied over in one go. Stops at the first missing,
    corrupt or late chunk; every block from there on is failed.

    With ``shared_dir``, chunks the daemon names as files there are read from them, several
    at once (:func:`load_files`); the result lists the daemon's holds on them, to release.
    """
    direct = codec.direct
    staged = None if direct else codec.staging(len(keys))
    dtype = torch_dtype(codec.model_layout.dtype)
    loaded = from_files = refetched = 0
    holds: set[str] = set()
    pending: list[LocalChunk] = []
    stream: _Prefetch | None = None

    def place(chunk: Chunk) -> None:
        header = chunk.header
        if not header.matches(codec.model_layout) or header.tokens != header.chunk_tokens:
            raise ValueError("a chunk of another layout")
        if staged is None:
            kv = torch.frombuffer(chunk.payload, dtype=dtype).view(header.shape)
            codec.write_one(block_ids[loaded], kv)
        else:
            chunk.copy_into(staged[loaded])

    # Files go straight into their blocks where the buffer allows it (no copy at all), or
    # else straight into the staging buffer (a GPU's: one copy fewer than through a buffer).
    targets: Callable[[int], list[memoryview]] | None = None
    if staged is None and READ_INTO_BLOCKS and codec.addressable:
        targets = lambda i: codec.targets(block_ids[i])  # noqa: E731
    elif staged is not None and READ_INTO_BLOCKS:
        targets = _staged_targets(staged)

    def write(first: int, blocks: torch.Tensor) -> None:
        if staged is None:
            codec.write_direct(block_ids[first : first + blocks.shape[0]], blocks)
        else:
            staged[first : first + blocks.shape[0]].copy_(blocks)

    def flush() -> None:
        """Load the files named so far; one that is unusable is fetched again as bytes."""
        nonlocal loaded, from_files, refetched
        while pending and shared_dir is not None:
            end = loaded + len(pending)
            result = load_files(
                codec,
                shared_dir,
                pending,
                keys[loaded:end],
                loaded,
                write,
                targets=targets,
            )
            loaded += result.loaded
            from_files += result.loaded
            del pending[: result.loaded]
            if not pending:
                return
            log.warning(
                "memos connector: cannot use the shared file %s (%s): fetching it as bytes",
                pending[0].path,
                result.error,
            )
            refetched += 1
            place(decode(_refetch(client, keys[loaded]), keys[loaded]))
            loaded += 1
            del pending[0]

    try:
        with warnings.catch_warnings():
            # The chunk's bytes are read-only and only ever read: torch need not warn.
            warnings.simplefilter("ignore", UserWarning)
            if files and shared_dir is not None:
                if lease_id:
                    holds.add(lease_id)  # the Lookup's lease holds its files too
                pending.extend(files[: len(keys)])
                flush()
            if loaded < len(keys):
                shared_id = read_shared_id(shared_dir) if shared_dir is not None else ""
                rest = keys[loaded:]
                source: Iterator[Fetched]
                if shared_id:
                    source = client.iter_fetch_shared(
                        rest, shared_dir_id=shared_id, lease_id=lease_id
                    )
                else:
                    source = client.iter_fetch(rest, lease_id=lease_id)
                stream = _Prefetch(source)
                batch = max(1, FILE_BATCH_BYTES // max(1, _file_bytes(codec)))
                while loaded + len(pending) < len(keys):
                    # Named files are read a batch at a time, while later names arrive.
                    if pending and (len(pending) >= batch or not stream.ready()):
                        flush()
                        continue
                    item = stream.next(deadline)
                    if item is None:
                        break
                    key, got = item
                    if isinstance(got, LocalChunk):
                        if shared_dir is None:
                            raise ValueError("the daemon named a file, but no directory is set")
                        if got.hold:
                            holds.add(got.hold)
                        pending.append(got)
                        continue
                    flush()
                    place(decode(got, key))
                    loaded += 1
                flush()
                if loaded < len(keys):
                    raise LookupError(f"the daemon holds {loaded} of the blocks")
    except Exception as exc:  # every failure becomes a recompute
        log.warning(
            "memos connector: load stopped after %d of %d blocks (%s): recomputing the rest",
            loaded,
            len(keys),
            _reason(exc),
        )
    finally:
        if stream is not None:
            stream.close()
    if loaded and staged is not None:
        codec.write(block_ids[:loaded], staged[:loaded])
    return LoadResult(
        loaded,
        tuple(block_ids[loaded:]),
        from_files,
        refetched,
        tuple(h for h in holds if h),
        fetched=stream is not None,
    )


def _staged_targets(staged: torch.Tensor) -> Callable[[int], list[memoryview]]:
    """Position -> the bytes of ``staged[position]``: a chunk's payload is the staging
    buffer's layout, ``[layers, 2, H, N, head]`` contiguous, so a file reads into it whole."""
    rows = staged.view(torch.uint8).reshape(staged.shape[0], -1).numpy()
    return lambda i: [memoryview(rows[i])]


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


#: Shared files are read into one host buffer this many bytes at a time, verified, and copied
#: into their blocks together: a batch stays in the CPU's cache from the read to the copy, and
#: one copy per layer covers it (measured: 64 files of 512 KiB, 7-9 ms one by one, see the
#: README's connector section).
FILE_BATCH_BYTES = 4 << 20

#: Read shared files straight into their blocks where the KV buffer allows it (host memory,
#: a chunk's layers the block's own bytes), else straight into the staging buffer (a GPU's):
#: one pass over the bytes instead of a read and a copy.
READ_INTO_BLOCKS = True


@dataclass(frozen=True, slots=True)
class FilesLoaded:
    loaded: int  # leading files read, verified and copied
    error: str = ""  # why the next one could not be used


def _file_bytes(codec: BlockCodec) -> int:
    lay = codec.model_layout
    item = torch_dtype(lay.dtype).itemsize
    return HEADER_BYTES + lay.layers * 2 * lay.kv_heads * lay.chunk_tokens * lay.head_dim * item


#: Per thread (loads run in the forward pass's thread): the buffer files are read into.
_buffers = threading.local()


def _file_buffer(size: int) -> bytearray:
    """A host buffer of at least ``size`` bytes, reused from batch to batch and load to load:
    touching fresh pages for every load costs more than the copies themselves."""
    buffer: bytearray | None = getattr(_buffers, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = bytearray(size)
        _buffers.buffer = buffer
    return buffer


def load_files(
    codec: BlockCodec,
    root: Path,
    files: Sequence[LocalChunk],
    keys: Sequence[bytes],
    first: int,
    write: Callable[[int, torch.Tensor], None],
    *,
    targets: Callable[[int], list[memoryview]] | None = None,
) -> FilesLoaded:
    """Read ``files`` (the chunks of ``keys``), verify them as streamed bytes are verified
    (size, header, key, layout, checksum), and hand the leading good ones to ``write``
    (position from ``first``, ``[n, layers, 2, H, N, head]`` host blocks), a batch at a time.

    Each batch's files are read back to back into one reused buffer (``readv``: one system
    call per file, no Python-level copies), so that the blocks of a batch are one strided
    view of it, whatever the header between them, and go into the KV buffer in one copy per
    layer. Read, not mapped: mapping and unmapping a file per chunk cost more than
    the copy (measured: 21 ms for 32 MiB in 64 files mapped with MAP_POPULATE, 16 ms read one
    at a time). Stops at the first file that is unusable; ``error`` says why.

    With ``targets`` (position -> the runs of that block's bytes, see
    :meth:`BlockCodec.targets`, or its row of the staging buffer), each file is read straight
    there instead (:func:`_read_into_blocks`), and ``write`` is not called.
    """
    lay = codec.model_layout
    size = _file_bytes(codec)
    if targets is not None:
        return _read_into_blocks(codec, os.fspath(root), files, keys, first, targets, size)
    dtype = torch_dtype(lay.dtype)
    item = dtype.itemsize
    per_batch = max(1, FILE_BATCH_BYTES // size)
    buffer = _file_buffer(min(per_batch, len(files)) * size)
    view = memoryview(buffer)
    flat = torch.frombuffer(buffer, dtype=dtype)
    shape = (lay.layers, 2, lay.kv_heads, lay.chunk_tokens, lay.head_dim)
    inner = (2 * lay.kv_heads * lay.chunk_tokens * lay.head_dim, *_strides(shape[1:]))
    base = os.fspath(root)
    done = 0
    while done < len(files):
        count = min(per_batch, len(files) - done)
        good, error = count, ""
        for i in range(count):
            local, key = files[done + i], keys[done + i]
            try:
                chunk = _read_file(base, local, size, view[i * size : (i + 1) * size], key)
                _check_layout(chunk.header, lay)
            except Exception as exc:
                good, error = i, _reason(exc)
                break
        if good:
            blocks = flat.as_strided((good, *shape), (size // item, *inner), HEADER_BYTES // item)
            write(first + done, blocks)
        done += good
        if error:
            return FilesLoaded(done, error)
    return FilesLoaded(done)


def _strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    return tuple(strides)


def _read_file(root: str, local: LocalChunk, size: int, into: memoryview, key: bytes) -> Chunk:
    """Read the file the daemon named into ``into`` (``size`` bytes) and verify it.

    Strings, not Path objects, and no fstat: this runs per chunk on the forward pass's path,
    and a file longer than its chunk cannot pass for it (the header's length, the checksum).
    """
    fd = _open_named(root, local, size)
    try:
        read = 0
        while read < size:
            n = os.readv(fd, [into[read:]])
            if not n:
                raise ValueError(f"the file ended after {read} of {size} bytes")
            read += n
    finally:
        os.close(fd)
    return decode(into, key)


def _read_into_blocks(
    codec: BlockCodec,
    root: str,
    files: Sequence[LocalChunk],
    keys: Sequence[bytes],
    first: int,
    targets: Callable[[int], list[memoryview]],
    size: int,
) -> FilesLoaded:
    """:func:`load_files` straight into the blocks: each file is read with one ``readv``
    whose buffers are its header and the runs of its block the payload fills, then checked
    where it landed (header, key, layout, and the checksum over those runs). A file that
    fails leaves its block half-written: the caller fetches it again, which overwrites it,
    or fails the block, which vLLM recomputes.

    Loads of :data:`PARALLEL_READ_MIN_FILES` files or more are split in consecutive parts,
    this thread reading the first while helper threads read the others (the reads and the
    checksums release the GIL): the forward pass has not started, so the cores are idle
    (vLLM's own copies, such as ExampleConnector's, use its OpenMP threads there). Two parts,
    or one per :data:`READ_BYTES_PER_THREAD` up to :data:`READING_THREADS`. Measured on a GPU
    host with 16 cores, 2,048 tokens: Llama-3-8B (128 files of 2 MiB) 68 ms in 2 threads,
    40 in 4, 26.5 in 8; llama-52m (128 files of 128 KiB) 5.1 ms in 2, 7.7 in 8 (each file's
    Python work then waits for the GIL).
    """
    if not files:
        return FilesLoaded(0)
    parts = 1
    if len(files) >= PARALLEL_READ_MIN_FILES:
        parts = min(READING_THREADS, max(2, len(files) * size // READ_BYTES_PER_THREAD))
    step = -(-len(files) // parts)
    starts = list(range(0, len(files), step))
    later: list[Future[FilesLoaded]] = []
    try:
        for start in starts[1:]:
            end = start + step
            later.append(
                _reader().submit(
                    _read_range,
                    codec,
                    root,
                    files[start:end],
                    keys[start:end],
                    first + start,
                    targets,
                    size,
                )
            )
        head = _read_range(codec, root, files[:step], keys[:step], first, targets, size)
    finally:
        # Every part is waited for, whatever happened: they write into the blocks.
        rest = [future.result() for future in later]
    results = [head, *rest]
    loaded = 0
    for start, result in zip(starts, results, strict=True):
        loaded = start + result.loaded
        if result.error or result.loaded < min(step, len(files) - start):
            return FilesLoaded(loaded, result.error)
    return FilesLoaded(loaded)


#: Loads of at least this many shared files read them in several threads.
PARALLEL_READ_MIN_FILES = 8


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 2


#: Threads reading one load's files at most: one per two cores, 2 to 8.
READING_THREADS = max(2, min(8, _cores() // 2))

#: A thread more per this many bytes of files in a load (at least two threads).
READ_BYTES_PER_THREAD = 16 << 20

_readers: dict[int, ThreadPoolExecutor] = {}  # by process id: a forked child makes its own
_readers_lock = threading.Lock()


def _reader() -> ThreadPoolExecutor:
    """The helper threads of :func:`_read_into_blocks`, this process's (started on first
    use)."""
    with _readers_lock:
        pool = _readers.get(os.getpid())
        if pool is None:
            pool = _readers[os.getpid()] = ThreadPoolExecutor(
                max(1, READING_THREADS - 1), thread_name_prefix="memos-kv-read"
            )
        return pool


def _read_range(
    codec: BlockCodec,
    root: str,
    files: Sequence[LocalChunk],
    keys: Sequence[bytes],
    first: int,
    targets: Callable[[int], list[memoryview]],
    size: int,
) -> FilesLoaded:
    lay = codec.model_layout
    head = bytearray(HEADER_BYTES)
    for i, (local, key) in enumerate(zip(files, keys, strict=True)):
        try:
            fd = _open_named(root, local, size)
            try:
                into = targets(first + i)
                got = os.readv(fd, [head, *into])
            finally:
                os.close(fd)
            if got != size:
                raise ValueError(f"read {got} of the file's {size} bytes")
            _check_layout(decode_header(memoryview(head), key, total_bytes=size), lay)
            verify_checksum(memoryview(head), into)
        except Exception as exc:
            return FilesLoaded(i, _reason(exc))
    return FilesLoaded(len(files))


def _check_layout(header: ChunkHeader, layout: ModelLayout) -> None:
    """A file's chunk must be a full chunk of the engine's own layout."""
    if not header.matches(layout) or header.tokens != header.chunk_tokens:
        raise ValueError("a chunk of another layout")


def _open_named(root: str, local: LocalChunk, size: int) -> int:
    """Open the file the daemon named, relative to ``root``, after checking the name."""
    path = local.path
    if path.startswith("/") or ".." in path.split("/"):
        raise ValueError("the daemon named a path outside its shared directory")
    if local.size != size:
        raise ValueError(f"the daemon said {local.size} bytes, the layout's chunks have {size}")
    return os.open(os.path.join(root, path), os.O_RDONLY)


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

    def ready(self) -> bool:
        """Whether an item (or the end) is waiting: nothing to wait for."""
        return not self._queue.empty()

    def close(self) -> None:
        self._stop.set()


@dataclass(frozen=True, slots=True)
class SaveJob:
    keys: tuple[bytes, ...]
    blocks: torch.Tensor  # [n, layers, 2, H, N, head] on the host
    #: Returns once ``blocks`` holds the bytes (a device's copy to host may still run).
    ready: Callable[[], None]

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
            job.ready()
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
