"""memos's ``LoRAResolver`` for vLLM: an unknown adapter name is fetched from memosd.

When a request names a model vLLM does not serve, and the server runs with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` (vLLM consults resolvers only then), vLLM asks
its registered resolvers. This one reads the name as an adapter of the daemon's tenant:

- ``name``: the latest version of ``name`` (vLLM then keeps serving that version under the
  name until it is unloaded: ask for ``name@vN`` to pin a version);
- ``name@vN``: version N.

Adapter version ids (ULIDs) are not resolved: they are the names under which the daemon
itself loads adapters (``parameter.engine = "vllm"``), and an adapter the daemon's policy
unloaded must stay unloaded until the daemon loads it again.

The resolver downloads the version's two files (AdapterService.Download), checks them
against the version's content digest (the daemon validated that content against the base
model when it was registered), and materialises them, read-only, in
``<cache_dir>/sha256/<digest>/``: one directory per content, written once through a
temporary directory and a rename, never overwritten, reused by every name and restart.

Settings come from the environment of the vLLM process (``MEMOS_VLLM_RESOLVER_*``, read by
``memos.config``): ``DAEMON`` (host:port), ``TOKEN`` or ``TOKEN_FILE``, ``TENANT`` (a
daemon without tokens), ``CACHE_DIR``, ``BASE_MODEL`` (the daemon's base model fingerprint
the adapters must carry), ``TIMEOUT_S``, ``MAX_BYTES``, ``ENABLED``.

A name the daemon does not have is answered None (vLLM's 404 "does not exist"). Any other
failure (the daemon out of reach, credentials refused, content that fails its checks) is
answered with an HTTP error whose message says what to fix, instead of that 404.

The daemon learns what the resolver loaded: a Download by name makes its adapter slots
check what vLLM serves soon after, and take the adapter in (``AdapterSlots.resync``).

This module imports vLLM only in :func:`register_resolver`; :class:`AdapterResolver` (the
whole logic) runs without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from memos.errors import (
    InvalidArgument,
    MemosError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from memos.ids import is_valid_id
from memos.tiers.parameter.names import (
    ADAPTER_FILES,
    CONFIG_FILE,
    WEIGHTS_FILE,
    check_adapter_name,
)
from memos.tiers.parameter.store import content_digest as _store_digest

if TYPE_CHECKING:
    from memos.client import MemosClient
    from memos.client_adapters import AdapterInfo

log = logging.getLogger(__name__)

RESOLVER_NAME = "memos"
_REF = re.compile(r"^(?P<name>.+)@v(?P<version>[1-9][0-9]{0,8})$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class ResolverSettings(BaseModel):
    """The resolver's settings (``MEMOS_VLLM_RESOLVER_<FIELD>`` in vLLM's environment)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    daemon: str = "127.0.0.1:50051"
    # The bearer token, inline or (in Kubernetes) from a mounted Secret; a file wins.
    token: SecretStr | None = None
    token_file: Path | None = None
    tenant: str | None = None
    # Default: memos-lora-cache in the system's temporary directory.
    cache_dir: Path | None = None
    # The base model fingerprint the daemon validated the adapters against; when set, an
    # adapter validated against another model is refused.
    base_model: str | None = None
    timeout_s: float = Field(30.0, gt=0)
    max_bytes: int = Field(1024**3, ge=1)

    @classmethod
    def from_env(cls) -> ResolverSettings:
        from memos.config import vllm_resolver_env

        return cls.model_validate(vllm_resolver_env())

    @property
    def cache_root(self) -> Path:
        return self.cache_dir or Path(tempfile.gettempdir()) / "memos-lora-cache"

    def bearer_token(self) -> str | None:
        if self.token_file is not None:
            try:
                return self.token_file.read_text().strip() or None
            except OSError as exc:
                log.error(
                    "memos LoRA resolver: cannot read token_file %s: %s", self.token_file, exc
                )
                return None
        return self.token.get_secret_value() if self.token is not None else None


class ResolverError(Exception):
    """Why a name could not be resolved, for vLLM's client: ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def explain(lora_name: str, daemon: str, exc: MemosError) -> ResolverError:
    """The client's error for a failed resolution: what went wrong and what to fix."""
    head = f"memos LoRA resolver: cannot resolve adapter {lora_name!r}"
    if isinstance(exc, Unavailable):
        return ResolverError(
            f"{head}: memosd at {daemon} did not answer ({exc}). Check that memosd is up and "
            "that MEMOS_VLLM_RESOLVER_DAEMON in the vLLM server's environment points at it",
            503,
        )
    if isinstance(exc, Unauthenticated | PermissionDenied):
        return ResolverError(
            f"{head}: memosd at {daemon} refused the resolver's credentials ({exc}). Set "
            "MEMOS_VLLM_RESOLVER_TOKEN or _TOKEN_FILE to a token with the read scope",
            500,
        )
    if isinstance(exc, InvalidArgument):
        return ResolverError(f"{head}: this engine cannot serve it: {exc}", 422)
    return ResolverError(f"{head}: {type(exc).__name__}: {exc}", 500)


@dataclass(frozen=True, slots=True)
class Resolved:
    """An adapter version materialised for the engine."""

    lora_name: str
    path: Path
    adapter: AdapterInfo

    @property
    def int_id(self) -> int:
        """A positive id derived from the content (vLLM replaces it with its own counter)."""
        return int(self.adapter.digest[:15], 16) + 1


def parse_lora_name(lora_name: str) -> tuple[str, int] | None:
    """``(name, version)`` (0: the latest) for ``name`` or ``name@vN``; None when the name
    is no adapter name, or is a version id (the daemon's own keys)."""
    match = _REF.match(lora_name)
    name, version = (match["name"], int(match["version"])) if match else (lora_name, 0)
    if is_valid_id(name):
        return None
    try:
        check_adapter_name(name)
    except InvalidArgument:
        return None
    return name, version


def content_digest(config: bytes, weights: bytes) -> str:
    """The content address of an adapter's two files, as the daemon's store computes it."""
    return _store_digest(hashlib.sha256(config).digest(), hashlib.sha256(weights).digest())


class AdapterResolver:
    """Resolves adapter names through the daemon and materialises them in a local cache."""

    def __init__(self, settings: ResolverSettings, client: MemosClient | None = None) -> None:
        self.settings = settings
        self.root = settings.cache_root
        self._client = client
        self._lock = threading.Lock()

    def _adapters(self) -> Any:
        from memos.client import MemosClient
        from memos.client_adapters import AdapterClient

        with self._lock:
            if self._client is None:
                s = self.settings
                self._client = MemosClient(
                    s.daemon,
                    token=s.bearer_token(),
                    tenant=s.tenant,
                    timeout=s.timeout_s,
                    max_message_bytes=min(s.max_bytes + (1 << 20), 2**31 - 1),
                )
            return AdapterClient(self._client)

    def resolve(self, lora_name: str, *, raise_errors: bool = False) -> Resolved | None:
        """The adapter ``lora_name`` names, materialised; None when the daemon has none.

        A daemon that cannot be reached, or content that fails its checks, is logged and
        answered None too, or with ``raise_errors`` raised as a :class:`ResolverError`
        that says what to fix (what vLLM's client then sees).
        """
        parsed = parse_lora_name(lora_name)
        if parsed is None:
            return None
        name, version = parsed
        try:
            info, files = self._adapters().download(name=name, version=version)
            path = self.materialise(info, files)
        except NotFound:
            return None
        except MemosError as exc:
            log.error(
                "memos LoRA resolver: cannot resolve %r through memosd at %s: %s",
                lora_name,
                self.settings.daemon,
                exc,
            )
            if raise_errors:
                raise explain(lora_name, self.settings.daemon, exc) from None
            return None
        log.info("memos LoRA resolver: %r is %s (%s) at %s", lora_name, info.ref, info.id, path)
        return Resolved(lora_name, path, info)

    def materialise(self, info: AdapterInfo, files: dict[str, bytes]) -> Path:
        """Check ``files`` against ``info`` and write them once under their digest."""
        if not _DIGEST.match(info.digest):
            raise InvalidArgument(f"adapter {info.ref}: {info.digest!r} is not a sha256 digest")
        if set(files) != set(ADAPTER_FILES):
            raise InvalidArgument(
                f"adapter {info.ref}: the daemon sent {sorted(files)}, not {list(ADAPTER_FILES)}"
            )
        size = sum(len(v) for v in files.values())
        if size > self.settings.max_bytes:
            raise InvalidArgument(
                f"adapter {info.ref} is {size} bytes, over MEMOS_VLLM_RESOLVER_MAX_BYTES="
                f"{self.settings.max_bytes}"
            )
        expected_model = self.settings.base_model
        if expected_model is not None and info.base_model != expected_model:
            raise InvalidArgument(
                f"adapter {info.ref} was validated against base model {info.base_model!r}, "
                f"not this engine's {expected_model!r}"
            )
        found = content_digest(files[CONFIG_FILE], files[WEIGHTS_FILE])
        if found != info.digest:
            raise InvalidArgument(
                f"adapter {info.ref}: the files downloaded have digest {found}, the daemon "
                f"says {info.digest} (corrupted in transit or on the daemon's disk)"
            )
        final = self.root / "sha256" / info.digest
        if self._intact(final, info.digest):
            return final
        if final.exists():
            # Never overwritten: a damaged copy is moved aside, then replaced whole.
            aside = final.with_name(f"{info.digest}.damaged.{os.getpid()}")
            with contextlib.suppress(OSError):
                os.rename(final, aside)
                shutil.rmtree(aside, ignore_errors=True)
        tmp_root = self.root / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{info.digest[:16]}.", dir=tmp_root))
        try:
            for file_name, data in files.items():
                with (tmp / file_name).open("wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                (tmp / file_name).chmod(0o444)
            try:
                os.rename(tmp, final)
            except OSError:
                # Another process materialised the same content first: use theirs.
                if not self._intact(final, info.digest):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    @staticmethod
    def _intact(folder: Path, digest: str) -> bool:
        try:
            config = (folder / CONFIG_FILE).read_bytes()
            weights = (folder / WEIGHTS_FILE).read_bytes()
        except OSError:
            return False
        return content_digest(config, weights) == digest

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def register_resolver(settings: ResolverSettings | None = None) -> bool:
    """Register the resolver with vLLM (once per process); False when it is disabled."""
    settings = settings or ResolverSettings.from_env()
    if not settings.enabled:
        return False
    from vllm import envs
    from vllm.lora.request import LoRARequest
    from vllm.lora.resolver import LoRAResolver, LoRAResolverRegistry

    if RESOLVER_NAME in LoRAResolverRegistry.get_supported_resolvers():
        return True
    if not envs.VLLM_ALLOW_RUNTIME_LORA_UPDATING:
        log.info(
            "memos LoRA resolver registered, but vLLM consults resolvers only with "
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
        )
    resolver = AdapterResolver(settings)

    class MemosLoRAResolver(LoRAResolver):  # type: ignore[misc]  # vLLM is untyped here
        async def resolve_lora(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
            # The gRPC download blocks: keep it off the server's event loop.
            try:
                done = await asyncio.to_thread(resolver.resolve, lora_name, raise_errors=True)
            except ResolverError as exc:
                raise http_error(exc) from None
            if done is None:
                return None
            return LoRARequest(
                lora_name=done.lora_name, lora_int_id=done.int_id, lora_path=str(done.path)
            )

    LoRAResolverRegistry.register_resolver(RESOLVER_NAME, MemosLoRAResolver())
    return True


def http_error(exc: ResolverError) -> Exception:
    """``exc`` as the error vLLM's server answers with its status and message (vLLM's
    ``GracefulHTTPError``; a plain RuntimeError, a 500, where vLLM lacks it)."""
    from http import HTTPStatus

    try:
        from vllm.exceptions import GracefulHTTPError
    except ImportError:
        return RuntimeError(exc.message)
    error: Exception = GracefulHTTPError(exc.message, HTTPStatus(exc.status))
    return error
