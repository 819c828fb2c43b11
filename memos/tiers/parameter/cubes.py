"""Adapters as MemCubes: the parameter tier's calls for a caller, confined to its tenant.

``AdapterCubes`` is what AdapterService (and the kernel's users) call. Every adapter
version the tier stores is mirrored by a parameter cube with the same id in the kernel's
cube-record store (payload: base model fingerprint, weights digest, rank, target modules,
path), so cube listings, watches and provenance (``parent_ids``: the merged versions, or
the memories a run trained on) cover adapters too.

Two stores, one order: the adapter is written first, then its cube; if the cube cannot be
written, an adapter version this call created is removed again, so there is never a cube
without its adapter. Deletion goes the other way round (tombstone, then the files): an
interruption leaves at worst files without a live cube, which a repeated delete removes.

Scopes: ``read`` lists, gets and asks for slot decisions; ``write`` uploads, merges, trains
and deletes; registering from a path on the daemon's host needs ``admin``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from memos.config import ParameterSettings
from memos.cube import (
    DEFAULT_NAMESPACE,
    Kind,
    MemCube,
    Source,
    State,
    check_id,
    check_metadata,
)
from memos.errors import (
    FailedPrecondition,
    InvalidArgument,
    MemosError,
    NotFound,
    ResourceExhausted,
)
from memos.events import ChangeEvent, ChangeType
from memos.tiers.parameter.jobs import TrainJob
from memos.tiers.parameter.merge import MergeResult, Method, Space
from memos.tiers.parameter.names import check_adapter_name
from memos.tiers.parameter.record import AdapterRecord
from memos.tiers.parameter.slots import AdapterSlots, SlotDecision
from memos.tiers.parameter.tier import MergeSource, ParameterTier
from memos.tiers.parameter.train import TrainConfig, TrainProgress, TrainResult

if TYPE_CHECKING:
    from memos.kernel import MemoryOS, Principal

log = logging.getLogger(__name__)

#: Metadata keys the tier writes on an adapter's cube (an upload may not set them).
RESERVED_PREFIXES = ("adapter.", "merge.", "train.")
_CLOSE_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class Registered:
    record: AdapterRecord
    cube: MemCube
    #: False when the same content already was the latest version of the name.
    created: bool


@dataclass(frozen=True, slots=True)
class Merged:
    record: AdapterRecord
    cube: MemCube
    result: MergeResult


@dataclass(frozen=True, slots=True)
class Trained:
    record: AdapterRecord
    cube: MemCube
    result: TrainResult


@dataclass(frozen=True, slots=True)
class Page:
    """A slot decision for the engine: unload ``unload``, then load ``record`` if ``load``."""

    record: AdapterRecord
    hit: bool
    load: bool
    unload: tuple[str, ...]
    bit: int | None
    #: The daemon carried the decision out on its engine (``AdapterSlots.driver``).
    applied: bool = False

    @property
    def key(self) -> str:
        """The adapter's name in the engine: its version id (unique across tenants)."""
        return self.record.id


class AdapterCubes:
    def __init__(
        self,
        kernel: MemoryOS,
        tier: ParameterTier,
        slots: AdapterSlots,
        settings: ParameterSettings | None = None,
    ) -> None:
        self.kernel = kernel
        self.tier = tier
        self.slots = slots
        self.settings = settings or ParameterSettings()
        self._train_slot = threading.Semaphore(1)
        self._jobs: set[TrainJob[Trained]] = set()
        self._jobs_lock = threading.Lock()
        # Keys that held an engine slot when their adapter was deleted: the engine must
        # unload them too, so the next decision carries them.
        self._orphans: list[str] = []
        self._orphans_lock = threading.Lock()

    # -- registration ----------------------------------------------------------------------

    def register_stream(
        self,
        who: Principal,
        name: str,
        chunks: Iterable[tuple[str, bytes]],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> Registered:
        """Register the adapter whose files arrive as ``(file name, bytes)`` chunks."""
        who.require("write")
        meta = self._user_metadata(metadata)

        def write() -> AdapterRecord:
            with self.tier.upload(who.tenant, name, metadata=meta) as up:
                for file_name, data in chunks:
                    up.write(file_name, data)
                return up.commit()

        return self._registered(who, name, write)

    def register_files(
        self,
        who: Principal,
        name: str,
        files: Mapping[str, bytes],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> Registered:
        return self.register_stream(who, name, files.items(), metadata=metadata)

    def register_path(
        self,
        who: Principal,
        name: str,
        directory: Path | str,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> Registered:
        """Register the adapter in ``directory`` on the daemon's host (admin only)."""
        who.require("admin")
        meta = self._user_metadata(metadata)
        path = Path(directory)
        if not path.is_absolute():
            raise InvalidArgument(f"source path {str(path)!r} is relative: give an absolute path")
        return self._registered(
            who,
            name,
            lambda: self.tier.store.register_path(who.tenant, name, path, metadata=meta),
        )

    # -- reads -----------------------------------------------------------------------------

    def list_adapters(self, who: Principal, *, all_versions: bool = False) -> list[AdapterRecord]:
        who.require("read")
        return self.tier.list_adapters(who.tenant, all_versions=all_versions)

    def get(self, who: Principal, name: str, version: int | None = None) -> AdapterRecord:
        who.require("read")
        return self.tier.get(who.tenant, name, version)

    def get_by_id(self, who: Principal, record_id: str) -> AdapterRecord:
        """The version whose id (its cube's, and its key in an engine) is ``record_id``."""
        who.require("read")
        check_id(record_id)
        return self.tier.store.get_by_id(who.tenant, record_id)

    # -- deletion --------------------------------------------------------------------------

    def delete(self, who: Principal, name: str, version: int | None = None) -> list[AdapterRecord]:
        """Delete one version of ``name``, or every version: tombstones first, then files."""
        who.require("write")
        if version is None:
            records = self.tier.store.versions(who.tenant, name)
            if not records:
                raise NotFound(f"no adapter {name!r} in tenant {who.tenant!r}")
        else:
            records = [self.tier.get(who.tenant, name, version)]
        for record in records:
            with contextlib.suppress(NotFound):  # already a tombstone, or never mirrored
                self.kernel.retire(who, record.id)
        dropped: list[AdapterRecord] = []
        for record in records:
            with contextlib.suppress(NotFound):  # a concurrent delete got there first
                dropped.extend(self.tier.delete(who.tenant, name, record.version))
            if self.slots.remove(record.id):
                with self._orphans_lock:
                    self._orphans.append(record.id)
            if self.slots.driver is not None:
                # vLLM's resolver serves versions under their names ("name", "name@vN"),
                # whether or not a resync took them in yet: a deleted version must not stay
                # served under either (a name is resolved anew on its next use).
                for key in (record.name, f"{record.name}@v{record.version}"):
                    self.slots.remove(key)
                    with self._orphans_lock:
                        self._orphans.append(key)
        return dropped

    # -- fusion ----------------------------------------------------------------------------

    def merge(
        self,
        who: Principal,
        name: str,
        sources: Sequence[MergeSource],
        *,
        method: Method = "linear",
        space: Space = "factors",
        rank: int | None = None,
        density: float = 0.2,
    ) -> Merged:
        """Merge the caller's adapters ``sources`` into a new adapter ``name``."""
        who.require("write")
        if not sources:
            raise InvalidArgument("a merge needs at least one source adapter")
        results: list[MergeResult] = []

        def write() -> AdapterRecord:
            record, result = self.tier.merge(
                who.tenant, name, sources, method=method, space=space, rank=rank, density=density
            )
            results.append(result)
            return record

        done = self._registered(who, name, write)
        return Merged(done.record, done.cube, results[0])

    # -- plaintext -> parameter ------------------------------------------------------------

    def start_training(
        self,
        who: Principal,
        name: str,
        memory_ids: Sequence[str],
        config: TrainConfig | None = None,
    ) -> TrainJob[Trained]:
        """Check the request, then start training ``name`` on the memories ``memory_ids``
        (plaintext cubes of the caller's tenant) on a thread of its own."""
        who.require("write")
        check_adapter_name(name)
        if self.tier.training_model is None:
            raise FailedPrecondition(
                "this daemon's engine.model_path has no weights (config.json only): it "
                "validates adapters but cannot train them"
            )
        config = config or TrainConfig()
        config.check()
        limits = self.settings
        if config.steps > limits.max_train_steps:
            raise InvalidArgument(
                f"{config.steps} training steps, over the limit of {limits.max_train_steps}"
            )
        spec = self.tier.store.spec
        for target in config.target_modules:
            if not spec.matching([target]):
                raise InvalidArgument(
                    f"target module {target!r} does not exist in base model {spec.model_id!r}"
                )
        texts, ids = self._memories(who, memory_ids)
        if not self._train_slot.acquire(blocking=False):
            raise ResourceExhausted(
                "a training run is in progress on this daemon (one at a time): retry when it "
                "ends, or cancel it"
            )

        def run(progress: Callable[[TrainProgress], None], cancel: threading.Event) -> Trained:
            results: list[TrainResult] = []

            def write() -> AdapterRecord:
                record, result = self.tier.train(
                    who.tenant, name, texts, ids, config, progress=progress, cancel=cancel
                )
                results.append(result)
                return record

            done = self._registered(who, name, write)
            return Trained(done.record, done.cube, results[0])

        def finished() -> None:
            with self._jobs_lock:
                self._jobs.discard(job)
            self._train_slot.release()

        job = TrainJob(run, name=name, on_exit=finished)
        with self._jobs_lock:
            self._jobs.add(job)
        return job.start()

    def train(
        self,
        who: Principal,
        name: str,
        memory_ids: Sequence[str],
        config: TrainConfig | None = None,
    ) -> Trained:
        """Train and wait for the result (what an embedded caller uses)."""
        return self.start_training(who, name, memory_ids, config).result()

    @property
    def training(self) -> int:
        """How many training runs are in progress."""
        with self._jobs_lock:
            return len(self._jobs)

    def _memories(self, who: Principal, memory_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        ids = list(dict.fromkeys(memory_ids))  # once each, in the given order
        if not ids:
            raise InvalidArgument("training needs at least one memory id")
        if len(ids) > self.settings.max_train_memories:
            raise InvalidArgument(
                f"{len(ids)} memories, over the limit of {self.settings.max_train_memories}"
            )
        texts = []
        for cube_id in ids:
            cube = self.kernel.get(who, cube_id)  # NotFound outside the caller's tenant
            if cube.kind != Kind.PLAINTEXT:
                raise InvalidArgument(
                    f"cube {cube_id} is a {cube.kind} cube: training reads plaintext memories"
                )
            texts.append(cube.text)
        return texts, ids

    # -- engine slots ----------------------------------------------------------------------

    def request(
        self, who: Principal, name: str, version: int | None = None, hint: int | None = None
    ) -> Page:
        """An inference call is about to use the caller's adapter ``name``: a page request."""
        who.require("read")
        record = self.tier.get(who.tenant, name, version)
        if self.slots.driver is not None:
            return self._serve(record, hint)
        decision: SlotDecision = self.slots.request(record.id, hint)
        with self._orphans_lock:
            orphans, self._orphans = tuple(self._orphans), []
        return Page(
            record=record,
            hit=decision.hit,
            load=decision.load is not None,
            unload=(*orphans, *decision.unload),
            bit=decision.bit,
        )

    def _serve(self, record: AdapterRecord, hint: int | None) -> Page:
        """The daemon drives the engine: the decision is carried out before the answer."""
        with self._orphans_lock:
            orphans, self._orphans = tuple(self._orphans), []
        # A failed call keeps the orphans it did not unload in the slots' stale list.
        decision = self.slots.serve(record, hint, unload_first=orphans)
        return Page(
            record=record,
            hit=decision.hit,
            load=decision.load is not None,
            unload=decision.unload,
            bit=decision.bit,
            applied=True,
        )

    def sent_to_engine(self, by_name: bool) -> None:
        """An adapter was downloaded (AdapterService.Download): by name, that is vLLM's
        resolver about to serve it; the slots take it in at their next resync, soon."""
        if by_name and self.slots.driver is not None:
            self.slots.resync_soon()

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Cancel the training runs in progress and wait a moment for them to stop."""
        self.slots.close()
        with self._jobs_lock:
            jobs = list(self._jobs)
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(BaseException):
                job.result(timeout=_CLOSE_WAIT_S)

    # -- the two writes --------------------------------------------------------------------

    def _registered(
        self, who: Principal, name: str, write: Callable[[], AdapterRecord]
    ) -> Registered:
        """Run ``write`` (which stores an adapter version), then mirror it as a cube."""
        tenant = who.tenant
        known = {r.id for r in self.tier.store.versions(tenant, name)}
        record = write()
        created = record.id not in known
        existing = self.kernel.plaintext.get(tenant, record.id)
        if existing is not None:
            return Registered(record, existing, created)
        try:
            cube = self._put_cube(who, record)
        except BaseException:
            # No cube without its adapter: drop the version this call made, unless a
            # concurrent registration of the same content mirrored it meanwhile.
            if created and self.kernel.plaintext.get(tenant, record.id) is None:
                try:
                    self.tier.delete(tenant, record.name, record.version)
                except MemosError:
                    log.exception("could not remove adapter %s after its cube failed", record.ref)
            raise
        return Registered(record, cube, created)

    def _put_cube(self, who: Principal, record: AdapterRecord) -> MemCube:
        at = datetime.fromisoformat(record.created_at)
        cube = MemCube(
            id=record.id,
            tenant=record.tenant,
            namespace=DEFAULT_NAMESPACE,
            kind=Kind.PARAMETER,
            state=State.ACTIVE,
            version=1,
            parent_ids=record.parents,
            source=Source(writer=who.name),
            created_at=at,
            updated_at=at,
            size_bytes=record.size_bytes,
            metadata=cube_metadata(record, self.kernel.settings.limits.max_metadata_value_chars),
            parameter=record.payload(),
        )
        (stored,) = self.kernel.plaintext.put([cube])
        self.kernel.events.publish(ChangeEvent(ChangeType.PUT, stored, at))
        return stored

    def _user_metadata(self, metadata: Mapping[str, str] | None) -> dict[str, str]:
        meta = dict(metadata or {})
        check_metadata(meta, self.kernel.settings.limits)
        for key in meta:
            if key.startswith(RESERVED_PREFIXES):
                raise InvalidArgument(
                    f"metadata key {key!r}: the prefixes {', '.join(RESERVED_PREFIXES)} are "
                    "written by the daemon"
                )
        return meta


def cube_metadata(record: AdapterRecord, max_value_chars: int) -> dict[str, str]:
    """The adapter cube's metadata: its name, version and origin, and the record's own."""
    meta = {
        **record.metadata,
        "adapter.name": record.name,
        "adapter.version": str(record.version),
        "adapter.origin": record.origin,
    }
    # A long merge.inputs list stays whole on the adapter record; the cube gets its start.
    return {
        k: v if len(v) <= max_value_chars else v[: max_value_chars - 3] + "..."
        for k, v in meta.items()
    }
