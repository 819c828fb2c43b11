"""What the connector is told: ``kv_connector_extra_config`` (per engine) and the ``memos.*``
entries of a request's ``kv_transfer_params`` (per request).

The engine-wide settings are validated when the engine starts, so a typo fails loudly there.
Per-request parameters never fail a request: a malformed one is logged and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

log = logging.getLogger(__name__)

#: The prefix of every per-request key the connector reads from ``kv_transfer_params``.
PARAM_PREFIX = "memos."


class ConnectorSettings(BaseModel):
    """``kv_connector_extra_config`` of ``--kv-transfer-config``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    daemon: str = "127.0.0.1:50051"
    # The bearer token, inline or (in Kubernetes) from a mounted Secret; a file wins.
    token: SecretStr | None = None
    token_file: Path | None = None
    # The tenant header for a daemon in development mode (no tokens); a token names its own.
    tenant: str | None = None
    # The model's name in the layout fingerprint; default: the engine's model path or name.
    # Set it when one model is served from different paths by engines that should share.
    model_id: str | None = None
    # Scheduler side: the Lookup runs in the background; the scheduler waits for answers
    # inline, at most this long per scheduler step, then moves on and asks again next step,
    # and gives up (a miss) after `lookup_timeout_s`.
    lookup_inline_ms: float = Field(5.0, ge=0)
    lookup_timeout_s: float = Field(2.0, gt=0)
    # How long the daemon keeps matched chunks pinned for the load (0: the daemon's default).
    lease_ms: int = Field(30_000, ge=0)
    # Worker side: a Fetch slower than this is abandoned and its blocks recomputed.
    load_timeout_s: float = Field(10.0, gt=0)
    # Saves are sent by a background thread; this bounds one Store call.
    store_timeout_s: float = Field(30.0, gt=0)
    # KV waiting to be sent; past it, new saves are dropped (a future miss, not an error).
    max_pending_store_bytes: int = Field(512 * 1024**2, ge=0)
    # Defaults of the per-request switches `memos.load` and `memos.save`.
    load: bool = True
    save: bool = True
    max_message_bytes: int = Field(16 * 1024**2, ge=64 * 1024)
    # Same host: this engine's mount of the daemon's `activation.shared_dir` (a shared
    # emptyDir, or a directory under /dev/shm). Loads then read chunk files the daemon names
    # there instead of receiving the bytes; a daemon that does not see the same directory
    # (its id file differs) sends bytes as without it. Per request, `memos.shared_dir: false`
    # turns it off.
    shared_dir: Path | None = None
    # With shared_dir: make Lookups and Releases on the daemon's socket there
    # (memos-lookup.sock, its `activation.lookup_socket`) instead of gRPC, about half the
    # round trip the scheduler waits for; gRPC wherever nothing answers on it.
    lookup_socket: bool = True

    @classmethod
    def from_extra_config(cls, extra: Mapping[str, Any] | None) -> ConnectorSettings:
        return cls.model_validate(dict(extra or {}))

    def bearer_token(self) -> str | None:
        """The token: the file's content (stripped) when a file is set, else ``token``.

        An unreadable file is logged and leaves the connector without a token: every call
        is then refused by the daemon, which costs recomputes, never a failed request.
        """
        if self.token_file is not None:
            try:
                value = self.token_file.read_text().strip()
            except OSError as exc:
                log.error("memos connector: cannot read token_file %s: %s", self.token_file, exc)
                return None
            return value or None
        return self.token.get_secret_value() if self.token is not None else None


@dataclass(frozen=True, slots=True)
class RequestParams:
    """A request's ``memos.*`` switches, with the engine's defaults filled in."""

    load: bool
    save: bool
    cube_ids: tuple[str, ...] = ()
    # The one-bit hint for the daemon's scheduler: True "will be reused soon", False "done
    # with it", None "no opinion".
    hint: bool | None = None
    # Whether the request set any memos.* key: it then gets a report in its output's
    # kv_transfer_params (tokens loaded, blocks saved, its block keys).
    report: bool = False
    # Load through the shared directory when the engine has one (`memos.shared_dir`).
    shared_dir: bool = True


def request_params(
    kv_transfer_params: Mapping[str, Any] | None, defaults: ConnectorSettings
) -> RequestParams:
    """Parse a request's ``kv_transfer_params``; bad values are logged and ignored."""
    params = kv_transfer_params or {}
    load = _flag(params, "load", defaults.load)
    save = _flag(params, "save", defaults.save)
    cube_ids: tuple[str, ...] = ()
    raw_ids = params.get(PARAM_PREFIX + "cube_ids")
    if raw_ids is not None:
        if isinstance(raw_ids, list | tuple) and all(isinstance(i, str) and i for i in raw_ids):
            cube_ids = tuple(raw_ids)
        else:
            log.warning("memos connector: ignoring memos.cube_ids=%r (a list of ids)", raw_ids)
    hint: bool | None = None
    raw_hint = params.get(PARAM_PREFIX + "hint")
    if raw_hint is not None:
        if isinstance(raw_hint, bool) or raw_hint in (0, 1):
            hint = bool(raw_hint)
        else:
            log.warning("memos connector: ignoring memos.hint=%r (0, 1 or a bool)", raw_hint)
    report = any(isinstance(k, str) and k.startswith(PARAM_PREFIX) for k in params)
    return RequestParams(
        load=load,
        save=save,
        cube_ids=cube_ids,
        hint=hint,
        report=report,
        shared_dir=_flag(params, "shared_dir", True),
    )


def _flag(params: Mapping[str, Any], name: str, default: bool) -> bool:
    value = params.get(PARAM_PREFIX + name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    log.warning("memos connector: ignoring memos.%s=%r (a bool)", name, value)
    return default
