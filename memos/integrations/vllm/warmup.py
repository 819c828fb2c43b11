"""Warm a memory's KV cache through a running vLLM server (migration plaintext -> activation).

A prefill-only request (``max_tokens=1``) with ``kv_transfer_params`` asking the connector to
save: vLLM computes the prompt's KV, ``MemCubeKVConnector`` stores its full blocks in memosd,
and the response's ``kv_transfer_params`` carry the blocks' keys back, which is what the
daemon records for the activation cube (cube -> block keys). Blocks the daemon already holds
are loaded rather than recomputed, and not stored again.

Needs only the standard library: the daemon calls it without vLLM installed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memos.integrations.vllm.settings import PARAM_PREFIX


class WarmupError(RuntimeError):
    """The server refused the request, or runs without the connector."""


class EngineUnreachable(WarmupError):
    """Nothing answered at the URL (refused, timed out, not HTTP)."""


class Warmed(BaseModel):
    """What the engine did with the prompt, from the connector's report."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int
    block_size: int
    loaded_tokens: int  # read from memosd instead of computed
    saved_blocks: int  # new blocks sent to memosd
    fingerprint: bytes  # the engine's layout fingerprint
    block_hashes: tuple[bytes, ...]  # vLLM's hash of every full block of the prompt

    @property
    def keys(self) -> list[bytes]:
        """The store keys of the prompt's full blocks, in order."""
        return [self.fingerprint + h for h in self.block_hashes]


class _Report(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    loaded_tokens: int = Field(alias=PARAM_PREFIX + "loaded_tokens")
    saved_blocks: int = Field(alias=PARAM_PREFIX + "saved_blocks")
    block_size: int = Field(alias=PARAM_PREFIX + "block_size")
    fingerprint: str = Field(alias=PARAM_PREFIX + "fingerprint")
    block_hashes: list[str] = Field(alias=PARAM_PREFIX + "block_hashes")


def served_model(url: str, *, api_key: str | None = None, timeout_s: float = 30.0) -> str:
    """The base model the server at ``url`` serves (its first ``/v1/models`` entry that is not
    a LoRA adapter)."""
    request = urllib.request.Request(url.rstrip("/") + "/v1/models", headers=_headers(api_key))
    doc = _call(url, request, timeout_s)
    models = doc.get("data") if isinstance(doc, dict) else None
    for entry in models if isinstance(models, list) else ():
        # vLLM lists an adapter with ``parent`` naming its base model.
        if isinstance(entry, dict) and isinstance(entry.get("id"), str) and not entry.get("parent"):
            return str(entry["id"])
    raise WarmupError(f"vLLM at {url} lists no base model in /v1/models")


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _call(url: str, request: urllib.request.Request, timeout_s: float) -> Any:
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise WarmupError(f"vLLM at {url} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise EngineUnreachable(f"cannot reach vLLM at {url}: {exc}") from None
    except ValueError as exc:  # not JSON: something else listens there
        raise WarmupError(f"{url} did not answer as a vLLM server: {exc}") from None


def warm(
    url: str,
    model: str,
    prompt: str | Sequence[int],
    *,
    cube_ids: Sequence[str] = (),
    cache_salt: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 600.0,
) -> Warmed:
    """Prefill ``prompt`` on the vLLM server at ``url`` (``http://host:port``) and save it.

    ``model`` is the served model, or a LoRA adapter's name (its KV is keyed apart).
    ``cache_salt`` must be the salt the tenant's requests will carry, or they never hit.
    """
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt if isinstance(prompt, str) else list(prompt),
        "max_tokens": 1,
        "temperature": 0.0,
        "kv_transfer_params": {
            PARAM_PREFIX + "save": True,
            PARAM_PREFIX + "cube_ids": list(cube_ids),
        },
    }
    if cache_salt:
        body["cache_salt"] = cache_salt
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/completions",
        data=json.dumps(body).encode(),
        headers=_headers(api_key),
        method="POST",
    )
    doc = _call(url, request, timeout_s)
    if not isinstance(doc, dict):
        raise WarmupError(f"{url} did not answer as a vLLM server")
    transfer = doc.get("kv_transfer_params") or {}
    if PARAM_PREFIX + "fingerprint" not in transfer:
        raise WarmupError(
            f"vLLM at {url} did not report through the memos connector: start it with "
            "--kv-transfer-config naming MemCubeKVConnector"
        )
    try:
        report = _Report.model_validate(transfer)
        return Warmed(
            prompt_tokens=int(doc.get("usage", {}).get("prompt_tokens", 0)),
            block_size=report.block_size,
            loaded_tokens=report.loaded_tokens,
            saved_blocks=report.saved_blocks,
            fingerprint=bytes.fromhex(report.fingerprint),
            block_hashes=tuple(bytes.fromhex(h) for h in report.block_hashes),
        )
    except (ValidationError, ValueError) as exc:
        raise WarmupError(f"the connector's report from {url} is malformed: {exc}") from None
