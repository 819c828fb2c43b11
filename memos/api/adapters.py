"""AdapterService: translates protobuf requests into the parameter tier's calls, and back.

The tier (``kernel.parameter``, memos.tiers.parameter.cubes) exists only when the daemon
has a base model; without one every call answers FAILED_PRECONDITION saying how to set it.
torch loads with the tier, not with this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from memos.api.auth import Authenticator
from memos.api.status import streaming, unary
from memos.cube import to_proto
from memos.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from memos.kernel import MemoryOS, Principal
from memos.v1 import adapter_pb2 as pb
from memos.v1 import adapter_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from memos.tiers.parameter.cubes import AdapterCubes, Page, Trained
    from memos.tiers.parameter.merge import Method, Space
    from memos.tiers.parameter.record import AdapterRecord
    from memos.tiers.parameter.train import TrainConfig

NO_MODEL = (
    "this daemon has no base model for LoRA adapters: set engine.model_path to a Hugging Face "
    'model directory (config file: [engine] model_path = "/models/name"; environment: '
    "MEMOS_ENGINE__MODEL_PATH) and restart memosd. Its config.json suffices to validate "
    "adapters; training also needs the weights"
)

_ORIGINS = {
    "upload": pb.ADAPTER_ORIGIN_UPLOAD,
    "merge": pb.ADAPTER_ORIGIN_MERGE,
    "train": pb.ADAPTER_ORIGIN_TRAIN,
}
_METHODS: dict[int, Method] = {
    pb.MERGE_METHOD_UNSPECIFIED: "linear",
    pb.MERGE_METHOD_LINEAR: "linear",
    pb.MERGE_METHOD_TIES: "ties",
}
_SPACES: dict[int, Space] = {
    pb.MERGE_SPACE_UNSPECIFIED: "factors",
    pb.MERGE_SPACE_FACTORS: "factors",
    pb.MERGE_SPACE_DENSE: "dense",
}
DEFAULT_DENSITY = 0.2
DOWNLOAD_CHUNK_BYTES = 1 << 20


def adapter_to_proto(record: AdapterRecord) -> pb.Adapter:
    created = Timestamp()
    created.FromDatetime(datetime.fromisoformat(record.created_at))
    return pb.Adapter(
        id=record.id,
        tenant=record.tenant,
        name=record.name,
        version=record.version,
        ref=record.ref,
        digest=record.digest,
        path=record.path,
        base_model=record.base_model,
        rank=record.rank,
        alpha=record.alpha,
        target_modules=list(record.target_modules),
        modules=record.modules,
        dtype=record.dtype,
        size_bytes=record.size_bytes,
        origin=_ORIGINS.get(record.origin, pb.ADAPTER_ORIGIN_UNSPECIFIED),
        created_at=created,
        parent_ids=list(record.parents),
        metadata=dict(record.metadata),
    )


def train_config(options: pb.TrainOptions) -> TrainConfig:
    """The run's settings: the request's, its zero values meaning the defaults."""
    from memos.tiers.parameter.train import TrainConfig

    d = TrainConfig()
    return TrainConfig(
        rank=options.rank or d.rank,
        alpha=options.alpha or d.alpha,
        target_modules=tuple(options.target_modules) or d.target_modules,
        steps=options.steps or d.steps,
        learning_rate=options.learning_rate or d.learning_rate,
        batch_size=options.batch_size or d.batch_size,
        max_tokens=options.max_tokens or d.max_tokens,
        seed=options.seed,
    )


def _chunks(requests: Iterator[pb.RegisterRequest]) -> Iterator[tuple[str, bytes]]:
    for message in requests:
        if message.WhichOneof("part") != "chunk":
            raise InvalidArgument("only file chunks may follow a Register stream's header")
        yield message.chunk.file, message.chunk.data


def _page(page: Page) -> pb.PageDecision:
    msg = pb.PageDecision(
        hit=page.hit,
        key=page.key,
        adapter=adapter_to_proto(page.record),
        load=page.load,
        unload=list(page.unload),
        applied=page.applied,
    )
    if page.bit is not None:
        msg.bit = page.bit
    return msg


def _result(trained: Trained) -> pb.TrainEvent:
    result = trained.result
    return pb.TrainEvent(
        result=pb.TrainResult(
            adapter=adapter_to_proto(trained.record),
            cube=to_proto(trained.cube),
            losses=list(result.losses),
            tokens=result.tokens,
            seconds=result.seconds,
        )
    )


class AdapterServicer(pb_grpc.AdapterServiceServicer):
    def __init__(
        self, kernel: Callable[[], MemoryOS], auth: Authenticator, *, poll_s: float = 0.5
    ) -> None:
        # ``kernel`` is a getter: the server answers (UNAVAILABLE) while the stores open.
        self._kernel = kernel
        self._auth = auth
        self._poll_s = poll_s

    def _enter(self, context: grpc.ServicerContext) -> tuple[AdapterCubes, Principal]:
        principal = self._auth.authenticate(context.invocation_metadata())
        try:
            kernel = self._kernel()
        except LookupError:
            raise Unavailable("the daemon is starting: its stores are not open yet") from None
        if kernel.parameter is None:
            raise FailedPrecondition(NO_MODEL)
        return kernel.parameter, principal

    @unary
    def Register(
        self, request_iterator: Iterator[pb.RegisterRequest], context: grpc.ServicerContext
    ) -> pb.RegisterResponse:
        adapters, who = self._enter(context)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument(
                "a Register stream starts with its header: the name, and a source_path or "
                "the files in chunks after it"
            )
        header = first.header
        metadata = dict(header.metadata)
        if header.source_path:
            if next(request_iterator, None) is not None:
                raise InvalidArgument("a Register by source_path carries no file chunks")
            done = adapters.register_path(who, header.name, header.source_path, metadata=metadata)
        else:
            done = adapters.register_stream(
                who, header.name, _chunks(request_iterator), metadata=metadata
            )
        return pb.RegisterResponse(
            adapter=adapter_to_proto(done.record), cube=to_proto(done.cube), created=done.created
        )

    @unary
    def List(
        self, request: pb.ListAdaptersRequest, context: grpc.ServicerContext
    ) -> pb.ListAdaptersResponse:
        adapters, who = self._enter(context)
        records = adapters.list_adapters(who, all_versions=request.all_versions)
        return pb.ListAdaptersResponse(adapters=[adapter_to_proto(r) for r in records])

    @unary
    def Get(
        self, request: pb.GetAdapterRequest, context: grpc.ServicerContext
    ) -> pb.GetAdapterResponse:
        adapters, who = self._enter(context)
        record = _resolve(adapters, who, request.id, request.name, request.version)
        return pb.GetAdapterResponse(adapter=adapter_to_proto(record))

    @unary
    def Delete(
        self, request: pb.DeleteAdapterRequest, context: grpc.ServicerContext
    ) -> pb.DeleteAdapterResponse:
        adapters, who = self._enter(context)
        dropped = adapters.delete(who, request.name, request.version or None)
        return pb.DeleteAdapterResponse(deleted=[adapter_to_proto(r) for r in dropped])

    @unary
    def Merge(self, request: pb.MergeRequest, context: grpc.ServicerContext) -> pb.MergeResponse:
        from memos.tiers.parameter.tier import MergeSource

        adapters, who = self._enter(context)
        if request.method not in _METHODS:
            raise InvalidArgument(f"unknown merge method {request.method}")
        if request.space not in _SPACES:
            raise InvalidArgument(f"unknown merge space {request.space}")
        sources = [
            MergeSource(
                name=s.name,
                weight=s.weight if s.HasField("weight") else 1.0,
                version=s.version or None,
            )
            for s in request.sources
        ]
        merged = adapters.merge(
            who,
            request.name,
            sources,
            method=_METHODS[request.method],
            space=_SPACES[request.space],
            rank=request.rank or None,
            density=request.density if request.HasField("density") else DEFAULT_DENSITY,
        )
        result = merged.result
        return pb.MergeResponse(
            adapter=adapter_to_proto(merged.record),
            cube=to_proto(merged.cube),
            rank=result.rank,
            error=result.error,
            module_errors=dict(result.module_errors),
        )

    @streaming
    def Train(
        self, request: pb.TrainRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.TrainEvent]:
        adapters, who = self._enter(context)
        config = train_config(request.options)
        job = adapters.start_training(who, request.name, list(request.memory_ids), config)
        # The client going away (a cancel, a deadline, a dropped connection) cancels the run.
        context.add_callback(job.cancel)
        try:
            yield pb.TrainEvent(
                started=pb.TrainStarted(memories=len(set(request.memory_ids)), steps=config.steps)
            )
            for event in job.progress(self._poll_s):
                if not context.is_active():
                    job.cancel()
                    return
                if event is not None:
                    yield pb.TrainEvent(
                        progress=pb.TrainProgress(
                            step=event.step,
                            steps=event.steps,
                            loss=event.loss,
                            elapsed_s=event.elapsed_s,
                        )
                    )
            yield _result(job.result())
        finally:
            if not job.done:
                job.cancel()

    @unary
    def Request(self, request: pb.PageRequest, context: grpc.ServicerContext) -> pb.PageDecision:
        adapters, who = self._enter(context)
        hint = request.hint if request.HasField("hint") else None
        page = adapters.request(who, request.name, request.version or None, hint)
        return _page(page)

    @streaming
    def Download(
        self, request: pb.DownloadAdapterRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DownloadAdapterResponse]:
        from memos.tiers.parameter.names import ADAPTER_FILES

        adapters, who = self._enter(context)
        record = _resolve(adapters, who, request.id, request.name, request.version)
        # Open both files before the first message: a version deleted meanwhile fails here,
        # not halfway through the stream.
        folder = Path(record.path)
        try:
            files = [(name, (folder / name).open("rb")) for name in ADAPTER_FILES]
        except FileNotFoundError:
            raise NotFound(f"adapter {record.ref} was deleted while being read") from None
        try:
            yield pb.DownloadAdapterResponse(adapter=adapter_to_proto(record))
            for name, f in files:
                while block := f.read(DOWNLOAD_CHUNK_BYTES):
                    yield pb.DownloadAdapterResponse(chunk=pb.FileChunk(file=name, data=block))
            adapters.sent_to_engine(by_name=not request.id)
        finally:
            for _, f in files:
                f.close()


def _resolve(
    adapters: AdapterCubes, who: Principal, adapter_id: str, name: str, version: int
) -> AdapterRecord:
    """The adapter a Get or Download names: by id, or by name and version (0: the latest)."""
    if adapter_id:
        if name or version:
            raise InvalidArgument("name an adapter by id, or by name and version: not both")
        return adapters.get_by_id(who, adapter_id)
    return adapters.get(who, name, version or None)
