"""Content-addressed, versioned adapter storage on a local directory.

Layout under ``root``::

    sha256/<digest>/adapter_model.safetensors   the blobs: written once, read-only, shared
    sha256/<digest>/adapter_config.json         by every name and tenant with that content
    index/<tenant>/<name>.json                  the versions of one adapter name
    tmp/                                        uploads in progress (same filesystem)

``digest = sha256("memos-lora/1\\0" + sha256(config) + sha256(weights))`` over the canonical
config JSON and the weights file, so the same content registered twice is one blob, and a
changed weight gets a new digest, a new version and a new path: nothing is overwritten in
place. An upload is written to a private temp directory, validated there and only then
renamed into place (atomic on one filesystem); a rejected upload leaves nothing behind.
Index files are replaced atomically. One lock (a thread lock and ``flock`` on
``root/.lock``) orders the writers of every process sharing the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from memos.cube import TENANT_PATTERN, TENANT_RULE
from memos.errors import InvalidArgument, NotFound
from memos.ids import is_valid_id, new_id
from memos.tiers.parameter.fingerprint import BaseModelSpec
from memos.tiers.parameter.names import (
    ADAPTER_FILES,
    CONFIG_FILE,
    WEIGHTS_FILE,
    check_adapter_name,
    check_file_name,
)
from memos.tiers.parameter.record import AdapterRecord, Origin
from memos.tiers.parameter.validate import AdapterLimits, validate_adapter
from memos.tiers.parameter.weights import LoraWeights, canonical_json

DIGEST_DOMAIN = b"memos-lora/1\x00"
_BLOCK = 1 << 20
STALE_UPLOAD_S = 3600.0


def content_digest(config_sha256: bytes, weights_sha256: bytes) -> str:
    return hashlib.sha256(DIGEST_DOMAIN + config_sha256 + weights_sha256).hexdigest()


def check_tenant(tenant: str) -> str:
    if not TENANT_PATTERN.match(tenant):
        raise InvalidArgument(f"bad tenant {tenant!r}: {TENANT_RULE}")
    return tenant


class Upload:
    """An adapter arriving in pieces: ``write`` chunks of either file, then ``commit``.

    Used as a context manager it is aborted (its temp directory removed) unless committed.
    """

    def __init__(
        self,
        store: AdapterStore,
        tenant: str,
        name: str,
        *,
        origin: Origin = "upload",
        parents: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.tenant = check_tenant(tenant)
        self.name = check_adapter_name(name)
        self.origin: Origin = origin
        self.parents = tuple(parents)
        for parent in self.parents:
            if not is_valid_id(parent):
                raise InvalidArgument(f"parent {parent!r} is not a cube id")
        self.metadata = dict(metadata or {})
        self.dir = Path(tempfile.mkdtemp(prefix="upload-", dir=store.root / "tmp"))
        self._files: dict[str, IO[bytes]] = {}
        self._sizes: dict[str, int] = {}
        self._done = False

    def write(self, file_name: str, data: bytes) -> None:
        """Append ``data`` to ``file_name`` (one of the two adapter files)."""
        if self._done:
            raise InvalidArgument("this upload is already committed or aborted")
        check_file_name(file_name)
        limits = self.store.limits
        cap = limits.max_weights_bytes if file_name == WEIGHTS_FILE else limits.max_config_bytes
        size = self._sizes.get(file_name, 0) + len(data)
        if size > cap:
            self.abort()
            raise InvalidArgument(f"{file_name} exceeds its limit of {cap} bytes")
        f = self._files.get(file_name)
        if f is None:
            f = self._files[file_name] = (self.dir / file_name).open("wb")
        f.write(data)
        self._sizes[file_name] = size

    def commit(self) -> AdapterRecord:
        """Validate, store and index the adapter; on any rejection nothing is kept."""
        if self._done:
            raise InvalidArgument("this upload is already committed or aborted")
        try:
            for f in self._files.values():
                f.flush()
                os.fsync(f.fileno())
                f.close()
            missing = [n for n in ADAPTER_FILES if n not in self._files]
            if missing:
                raise InvalidArgument(f"the upload lacks {' and '.join(missing)}")
            return self.store._commit(self)
        finally:
            self.abort()

    def abort(self) -> None:
        for f in self._files.values():
            f.close()
        self._done = True
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Upload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


class AdapterStore:
    """Adapters for one base model, validated against ``spec``, under ``root``."""

    def __init__(
        self, root: Path | str, spec: BaseModelSpec, limits: AdapterLimits | None = None
    ) -> None:
        self.root = Path(root).resolve()
        self.spec = spec
        self.limits = limits or AdapterLimits()
        for sub in ("sha256", "index", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._lock_path = self.root / ".lock"
        self._sweep_uploads()

    def _sweep_uploads(self) -> None:
        """Remove uploads abandoned by a process that died mid-way (older than an hour)."""
        cutoff = time.time() - STALE_UPLOAD_S
        for path in (self.root / "tmp").iterdir():
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock, self._lock_path.open("a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # -- writing ---------------------------------------------------------------------------

    def upload(
        self,
        tenant: str,
        name: str,
        *,
        origin: Origin = "upload",
        parents: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> Upload:
        """Start a streamed upload (what a client-streaming gRPC call feeds)."""
        return Upload(self, tenant, name, origin=origin, parents=parents, metadata=metadata)

    def register_path(
        self,
        tenant: str,
        name: str,
        directory: Path | str,
        *,
        parents: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> AdapterRecord:
        """Register the adapter in ``directory`` (its two files are copied, never linked)."""
        directory = Path(directory)
        with self.upload(tenant, name, parents=parents, metadata=metadata) as up:
            for file_name in ADAPTER_FILES:
                path = directory / file_name
                if not path.is_file():
                    raise InvalidArgument(f"{directory} has no {file_name}")
                with path.open("rb") as f:
                    while block := f.read(_BLOCK):
                        up.write(file_name, block)
            return up.commit()

    def register_files(
        self,
        tenant: str,
        name: str,
        files: Mapping[str, bytes],
        *,
        origin: Origin = "upload",
        parents: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> AdapterRecord:
        """Register an adapter given as ``{file name: bytes}``."""
        with self.upload(tenant, name, origin=origin, parents=parents, metadata=metadata) as up:
            for file_name, data in files.items():
                up.write(file_name, data)
            return up.commit()

    def register_weights(
        self,
        tenant: str,
        name: str,
        weights: LoraWeights,
        *,
        origin: Origin,
        parents: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> AdapterRecord:
        """Register an adapter built in process (a merge, a training run)."""
        files = {CONFIG_FILE: weights.config_bytes(), WEIGHTS_FILE: weights.weights_bytes()}
        return self.register_files(
            tenant, name, files, origin=origin, parents=parents, metadata=metadata
        )

    def _commit(self, up: Upload) -> AdapterRecord:
        config_raw = (up.dir / CONFIG_FILE).read_bytes()
        weights = validate_adapter(config_raw, up.dir / WEIGHTS_FILE, self.spec, self.limits)
        config = canonical_json(weights.config)
        _write_synced(up.dir / CONFIG_FILE, config)
        digest = content_digest(
            hashlib.sha256(config).digest(), _sha256_file(up.dir / WEIGHTS_FILE)
        )
        blob = self.root / "sha256" / digest
        with self._locked():
            if not blob.exists():
                for file_name in ADAPTER_FILES:
                    (up.dir / file_name).chmod(0o444)
                os.rename(up.dir, blob)
                _fsync_dir(blob.parent)
            versions = self._read_index(up.tenant, up.name)
            if versions and versions[-1].digest == digest:
                return versions[-1]
            record = AdapterRecord(
                id=new_id(),
                tenant=up.tenant,
                name=up.name,
                version=versions[-1].version + 1 if versions else 1,
                digest=digest,
                path=str(blob),
                base_model=self.spec.model_id,
                rank=weights.rank,
                alpha=float(weights.config["lora_alpha"]),
                target_modules=weights.target_modules,
                modules=len(weights.modules),
                dtype=str(weights.dtype).removeprefix("torch."),
                size_bytes=sum(p.stat().st_size for p in blob.iterdir()),
                origin=up.origin,
                created_at=datetime.now(UTC).isoformat(),
                parents=up.parents,
                metadata=up.metadata,
            )
            self._write_index(up.tenant, up.name, [*versions, record])
            return record

    # -- reading ---------------------------------------------------------------------------

    def get(self, tenant: str, name: str, version: int | None = None) -> AdapterRecord:
        """Version ``version`` of ``name`` (default: the latest)."""
        check_tenant(tenant)
        check_adapter_name(name)
        with self._locked():
            versions = self._read_index(tenant, name)
        if not versions:
            raise NotFound(f"no adapter {name!r} in tenant {tenant!r}")
        if version is None:
            return versions[-1]
        for record in versions:
            if record.version == version:
                return record
        raise NotFound(
            f"adapter {name!r} has no version {version} "
            f"(versions: {', '.join(str(r.version) for r in versions)})"
        )

    def versions(self, tenant: str, name: str) -> list[AdapterRecord]:
        """Every stored version of ``name``, oldest first (empty when there is none)."""
        check_tenant(tenant)
        check_adapter_name(name)
        with self._locked():
            return self._read_index(tenant, name)

    def get_by_id(self, tenant: str, record_id: str) -> AdapterRecord:
        for record in self.list_adapters(tenant, all_versions=True):
            if record.id == record_id:
                return record
        raise NotFound(f"no adapter version with id {record_id!r} in tenant {tenant!r}")

    def list_adapters(self, tenant: str, *, all_versions: bool = False) -> list[AdapterRecord]:
        """The tenant's adapters by name: the latest version of each, or every version."""
        check_tenant(tenant)
        out: list[AdapterRecord] = []
        with self._locked():
            folder = self.root / "index" / tenant
            for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
                versions = self._read_index(tenant, path.stem)
                out.extend(versions if all_versions else versions[-1:])
        return out

    def load(self, record: AdapterRecord, *, verify: bool = True) -> LoraWeights:
        """The weights of ``record``; ``verify`` re-checks the digest (the content address
        is the integrity check) and re-validates against the base model."""
        path = Path(record.path)
        config_raw = (path / CONFIG_FILE).read_bytes()
        if verify:
            found = content_digest(
                hashlib.sha256(config_raw).digest(), _sha256_file(path / WEIGHTS_FILE)
            )
            if found != record.digest:
                raise InvalidArgument(
                    f"adapter {record.ref}: stored content has digest {found}, expected "
                    f"{record.digest} (corrupted on disk)"
                )
        return validate_adapter(config_raw, path / WEIGHTS_FILE, self.spec, self.limits)

    # -- deleting --------------------------------------------------------------------------

    def delete(self, tenant: str, name: str, version: int | None = None) -> list[AdapterRecord]:
        """Drop one version of ``name`` or (``version=None``) all of them; blobs no longer
        referenced by any index are removed. Returns the dropped records."""
        check_tenant(tenant)
        check_adapter_name(name)
        with self._locked():
            versions = self._read_index(tenant, name)
            if not versions:
                raise NotFound(f"no adapter {name!r} in tenant {tenant!r}")
            if version is None:
                dropped, kept = versions, []
            else:
                dropped = [r for r in versions if r.version == version]
                if not dropped:
                    raise NotFound(f"adapter {name!r} has no version {version}")
                kept = [r for r in versions if r.version != version]
            if kept:
                self._write_index(tenant, name, kept)
            else:
                self._index_path(tenant, name).unlink()
            referenced = self._referenced()
            for digest in {r.digest for r in dropped} - referenced:
                blob = self.root / "sha256" / digest
                shutil.rmtree(blob, ignore_errors=True)
            return dropped

    def blobs(self) -> list[str]:
        """Every stored digest."""
        return sorted(p.name for p in (self.root / "sha256").iterdir() if p.is_dir())

    # -- the index -------------------------------------------------------------------------

    def _index_path(self, tenant: str, name: str) -> Path:
        return self.root / "index" / tenant / f"{name}.json"

    def _read_index(self, tenant: str, name: str) -> list[AdapterRecord]:
        path = self._index_path(tenant, name)
        if not path.exists():
            return []
        doc: dict[str, Any] = json.loads(path.read_bytes())
        return [AdapterRecord.from_json(v) for v in doc["versions"]]

    def _write_index(self, tenant: str, name: str, versions: Sequence[AdapterRecord]) -> None:
        path = self._index_path(tenant, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"tenant": tenant, "name": name, "versions": [r.to_json() for r in versions]}
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        _write_synced(tmp, json.dumps(doc, indent=1).encode())
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def _referenced(self) -> set[str]:
        digests: set[str] = set()
        for path in (self.root / "index").glob("*/*.json"):
            doc = json.loads(path.read_bytes())
            digests.update(v["digest"] for v in doc["versions"])
        return digests


def _sha256_file(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.digest()


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
