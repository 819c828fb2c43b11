"""The Python client of AdapterService: LoRA adapters in memosd, on a MemosClient's channel.

    from memos.client import MemosClient
    from memos.client_adapters import AdapterClient

    with MemosClient("127.0.0.1:50051", token="...") as memos:
        adapters = AdapterClient(memos)
        a = adapters.register("./my-adapter", name="support-tone").adapter
        merged = adapters.merge("blend", [("support-tone", 0.5), ("legal", 0.5)])
        with adapters.train("notes", memory_ids) as run:
            for event in run:
                ...  # TrainStarted, TrainProgress, then Trained
        adapters.delete("blend")

Failures raise the ``memos.errors`` class of the server's status, as MemosClient's do.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

import grpc
from pydantic import BaseModel, ConfigDict

from memos.client import MemosClient
from memos.cube import MemCube, from_proto
from memos.errors import InvalidArgument
from memos.v1 import adapter_pb2 as pb
from memos.v1 import adapter_pb2_grpc as pb_grpc

__all__ = [
    "AdapterClient",
    "AdapterInfo",
    "MergeInput",
    "Merged",
    "PageDecision",
    "Registered",
    "TrainProgress",
    "TrainStarted",
    "TrainStream",
    "Trained",
]

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
CHUNK_BYTES = 1 << 20
_ORIGINS = {
    pb.ADAPTER_ORIGIN_UPLOAD: "upload",
    pb.ADAPTER_ORIGIN_MERGE: "merge",
    pb.ADAPTER_ORIGIN_TRAIN: "train",
}
_METHODS = {"linear": pb.MERGE_METHOD_LINEAR, "ties": pb.MERGE_METHOD_TIES}
_SPACES = {"factors": pb.MERGE_SPACE_FACTORS, "dense": pb.MERGE_SPACE_DENSE}


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AdapterInfo(_Result):
    """One version of an adapter; ``id`` is also its parameter cube's id."""

    id: str
    tenant: str
    name: str
    version: int
    ref: str
    digest: str
    path: str
    base_model: str
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    modules: int
    dtype: str
    size_bytes: int
    origin: str
    created_at: datetime | None
    parent_ids: tuple[str, ...]
    metadata: dict[str, str]


class Registered(_Result):
    adapter: AdapterInfo
    cube: MemCube
    created: bool  # False: the same content already was the latest version


class Merged(_Result):
    adapter: AdapterInfo
    cube: MemCube
    rank: int
    error: float  # relative Frobenius error against the exact weighted sum of deltas
    module_errors: dict[str, float]


class TrainStarted(_Result):
    memories: int
    steps: int


class TrainProgress(_Result):
    step: int
    steps: int
    loss: float
    elapsed_s: float


class Trained(_Result):
    adapter: AdapterInfo
    cube: MemCube
    losses: tuple[float, ...]
    tokens: int
    seconds: float


class PageDecision(_Result):
    """What the engine must do before serving a request: unload, then load ``key``."""

    hit: bool
    key: str
    adapter: AdapterInfo
    load: bool
    unload: tuple[str, ...]
    bit: int | None
    applied: bool = False  # the daemon loaded it in its engine itself: nothing left to do


class MergeInput(_Result):
    name: str
    weight: float = 1.0
    version: int = 0  # 0: the latest


TrainEvent = TrainStarted | TrainProgress | Trained


def adapter_from_proto(msg: pb.Adapter) -> AdapterInfo:
    return AdapterInfo(
        id=msg.id,
        tenant=msg.tenant,
        name=msg.name,
        version=msg.version,
        ref=msg.ref,
        digest=msg.digest,
        path=msg.path,
        base_model=msg.base_model,
        rank=msg.rank,
        alpha=msg.alpha,
        target_modules=tuple(msg.target_modules),
        modules=msg.modules,
        dtype=msg.dtype,
        size_bytes=msg.size_bytes,
        origin=_ORIGINS.get(msg.origin, "unspecified"),
        created_at=msg.created_at.ToDatetime(tzinfo=UTC) if msg.HasField("created_at") else None,
        parent_ids=tuple(msg.parent_ids),
        metadata=dict(msg.metadata),
    )


def _event_from_proto(msg: pb.TrainEvent) -> TrainEvent:
    which = msg.WhichOneof("event")
    if which == "started":
        return TrainStarted(memories=msg.started.memories, steps=msg.started.steps)
    if which == "progress":
        p = msg.progress
        return TrainProgress(step=p.step, steps=p.steps, loss=p.loss, elapsed_s=p.elapsed_s)
    r = msg.result
    return Trained(
        adapter=adapter_from_proto(r.adapter),
        cube=from_proto(r.cube),
        losses=tuple(r.losses),
        tokens=r.tokens,
        seconds=r.seconds,
    )


def _file_chunks(
    files: Mapping[str, bytes | Path], chunk_bytes: int
) -> Iterator[pb.RegisterRequest]:
    for file_name, content in files.items():
        if isinstance(content, Path):
            with content.open("rb") as f:
                while block := f.read(chunk_bytes):
                    yield pb.RegisterRequest(chunk=pb.FileChunk(file=file_name, data=block))
            continue
        for start in range(0, len(content), chunk_bytes):
            block = content[start : start + chunk_bytes]
            yield pb.RegisterRequest(chunk=pb.FileChunk(file=file_name, data=block))


class AdapterClient:
    """AdapterService over ``client``'s channel, token and tenant (thread-safe like it)."""

    def __init__(self, client: MemosClient) -> None:
        self._client = client
        self._stub = pb_grpc.AdapterServiceStub(client.channel)  # type: ignore[no-untyped-call]

    def _call(self, method: str, request: Any, *, timeout: float | None = None) -> Any:
        return self._client.call(self._stub, method, request, timeout=timeout)

    def _raise(self, exc: grpc.RpcError) -> NoReturn:
        raise self._client.error_from_rpc(exc) from exc

    # -------------------------------------------------------------- registration

    def register(
        self,
        directory: Path | str,
        *,
        name: str,
        metadata: Mapping[str, str] | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        timeout: float | None = None,
    ) -> Registered:
        """Upload the adapter in the local ``directory`` (peft's two files) as ``name``."""
        folder = Path(directory)
        missing = [f for f in ADAPTER_FILES if not (folder / f).is_file()]
        if missing:
            raise InvalidArgument(f"{folder} has no {' and '.join(missing)}")
        return self.register_files(
            name,
            {f: folder / f for f in ADAPTER_FILES},
            metadata=metadata,
            chunk_bytes=chunk_bytes,
            timeout=timeout,
        )

    def register_files(
        self,
        name: str,
        files: Mapping[str, bytes | Path],
        *,
        metadata: Mapping[str, str] | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        timeout: float | None = None,
    ) -> Registered:
        """Upload an adapter given as ``{file name: bytes or local path}``."""
        header = pb.RegisterHeader(name=name, metadata=dict(metadata or {}))

        def stream() -> Iterator[pb.RegisterRequest]:
            yield pb.RegisterRequest(header=header)
            yield from _file_chunks(files, chunk_bytes)

        return self._registered(self._call("Register", stream(), timeout=timeout))

    def register_path(
        self, name: str, server_path: str, *, metadata: Mapping[str, str] | None = None
    ) -> Registered:
        """Have the daemon read the adapter from ``server_path`` on its own host (admin)."""
        header = pb.RegisterHeader(
            name=name, source_path=server_path, metadata=dict(metadata or {})
        )
        return self._registered(self._call("Register", iter([pb.RegisterRequest(header=header)])))

    @staticmethod
    def _registered(response: pb.RegisterResponse) -> Registered:
        return Registered(
            adapter=adapter_from_proto(response.adapter),
            cube=from_proto(response.cube),
            created=response.created,
        )

    # --------------------------------------------------------------------- reads

    def list(self, *, all_versions: bool = False) -> builtins.list[AdapterInfo]:
        """The tenant's adapters: the latest version of each name, or every version."""
        response = self._call("List", pb.ListAdaptersRequest(all_versions=all_versions))
        return [adapter_from_proto(a) for a in response.adapters]

    def get(self, name: str, *, version: int = 0) -> AdapterInfo:
        """One version of ``name`` (0: the latest)."""
        response = self._call("Get", pb.GetAdapterRequest(name=name, version=version))
        return adapter_from_proto(response.adapter)

    def get_by_id(self, adapter_id: str) -> AdapterInfo:
        """The version with this id (its cube's id, and its key in an engine)."""
        response = self._call("Get", pb.GetAdapterRequest(id=adapter_id))
        return adapter_from_proto(response.adapter)

    def delete(self, name: str, *, version: int = 0) -> builtins.list[AdapterInfo]:
        """Delete one version (0: every version); their cubes become tombstones."""
        response = self._call("Delete", pb.DeleteAdapterRequest(name=name, version=version))
        return [adapter_from_proto(a) for a in response.deleted]

    # --------------------------------------------------------------------- fusion

    def merge(
        self,
        name: str,
        sources: Sequence[MergeInput | tuple[str, float]],
        *,
        method: str = "linear",
        space: str = "factors",
        rank: int = 0,
        density: float | None = None,
        timeout: float | None = None,
    ) -> Merged:
        """Merge ``sources`` (``(name, weight)`` or MergeInput) into a new adapter ``name``.

        ``method``: linear or ties; ``space``: factors (exact, rank = sum of ranks) or dense
        (truncated SVD to ``rank``; 0: exact for linear, the largest input rank for ties).
        """
        if method not in _METHODS:
            raise InvalidArgument(f"unknown merge method {method!r}: use linear or ties")
        if space not in _SPACES:
            raise InvalidArgument(f"unknown merge space {space!r}: use factors or dense")
        request = pb.MergeRequest(
            name=name, method=_METHODS[method], space=_SPACES[space], rank=rank
        )
        for source in sources:
            s = (
                source
                if isinstance(source, MergeInput)
                else MergeInput(name=source[0], weight=source[1])
            )
            request.sources.append(pb.MergeSource(name=s.name, version=s.version, weight=s.weight))
        if density is not None:
            request.density = density
        response = self._call("Merge", request, timeout=timeout)
        return Merged(
            adapter=adapter_from_proto(response.adapter),
            cube=from_proto(response.cube),
            rank=response.rank,
            error=response.error,
            module_errors=dict(response.module_errors),
        )

    # ------------------------------------------------------------ plaintext -> parameter

    def train(
        self,
        name: str,
        memory_ids: Sequence[str],
        *,
        rank: int = 0,
        alpha: float = 0.0,
        target_modules: Sequence[str] = (),
        steps: int = 0,
        learning_rate: float = 0.0,
        batch_size: int = 0,
        max_tokens: int = 0,
        seed: int = 0,
    ) -> TrainStream:
        """Start training ``name`` on the memories ``memory_ids`` (0 / empty: defaults).

        Returns the stream of events (TrainStarted, TrainProgress per step, then Trained);
        ``cancel()`` on it (or leaving its ``with`` block early) cancels the run.
        """
        options = pb.TrainOptions(
            rank=rank,
            alpha=alpha,
            target_modules=list(target_modules),
            steps=steps,
            learning_rate=learning_rate,
            batch_size=batch_size,
            max_tokens=max_tokens,
            seed=seed,
        )
        request = pb.TrainRequest(name=name, memory_ids=list(memory_ids), options=options)
        # No deadline: a run on a real model takes as long as it takes.
        call = self._stub.Train(request, metadata=self._client.metadata)
        return TrainStream(self._client, call)

    # ------------------------------------------------------------------- engine slots

    def request(self, name: str, *, version: int = 0, hint: int | None = None) -> PageDecision:
        """A page request: an inference call is about to use ``name`` (``hint``: 1 = the
        session is done with it). Returns what the engine must unload and load first."""
        request = pb.PageRequest(name=name, version=version)
        if hint is not None:
            request.hint = hint
        response = self._call("Request", request)
        return PageDecision(
            hit=response.hit,
            key=response.key,
            adapter=adapter_from_proto(response.adapter),
            load=response.load,
            unload=tuple(response.unload),
            bit=response.bit if response.HasField("bit") else None,
            applied=response.applied,
        )

    def download(
        self,
        *,
        name: str = "",
        version: int = 0,
        adapter_id: str = "",
        timeout: float | None = None,
    ) -> tuple[AdapterInfo, dict[str, bytes]]:
        """An adapter version and its two files' bytes, by name (and version) or by id.

        The caller checks the files against ``AdapterInfo.digest`` before trusting them
        (``memos.integrations.vllm.lora_resolver`` does).
        """
        request = pb.DownloadAdapterRequest(name=name, version=version, id=adapter_id)
        call = self._stub.Download(
            request,
            metadata=self._client.metadata,
            timeout=timeout if timeout is not None else self._client.timeout,
        )
        info: AdapterInfo | None = None
        files: dict[str, bytearray] = {}
        try:
            for message in call:
                if message.WhichOneof("part") == "adapter":
                    info = adapter_from_proto(message.adapter)
                else:
                    files.setdefault(message.chunk.file, bytearray()).extend(message.chunk.data)
        except grpc.RpcError as exc:
            self._raise(exc)
        if info is None:
            raise InvalidArgument("the daemon's Download stream carried no adapter")
        return info, {k: bytes(v) for k, v in files.items()}


class TrainStream:
    """A training run's events; ``cancel()`` from any thread stops the run."""

    def __init__(self, client: MemosClient, call: Any) -> None:
        self._client = client
        self._call = call
        self._cancelled = False
        self.result: Trained | None = None

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> TrainEvent:
        try:
            message = next(self._call)
        except grpc.RpcError as exc:
            if self._cancelled and exc.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise self._client.error_from_rpc(exc) from exc
        event = _event_from_proto(message)
        if isinstance(event, Trained):
            self.result = event
        return event

    def wait(self) -> Trained:
        """Consume the stream; the trained adapter."""
        for _ in self:
            pass
        if self.result is None:
            raise self._client.error_from_rpc(self._call)
        return self.result

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.result is None:
            self.cancel()
