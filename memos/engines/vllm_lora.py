"""The adapter slots of a vLLM OpenAI server, driven over HTTP by the daemon.

vLLM's runtime LoRA endpoints (only present when the server runs with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``)::

    POST /v1/load_lora_adapter    {"lora_name": ..., "lora_path": ...}
    POST /v1/unload_lora_adapter  {"lora_name": ...}

An adapter is served under the name it was loaded with: a completion request names it as
its ``model``. The daemon names each adapter version by its id (``Page.key``), so two
tenants' adapters of the same name never collide, and the path is the version's
content-addressed directory (vLLM keys its prefix cache on the path: a new weight is a new
path, so no stale KV is reused).

Both calls are idempotent here: loading a name vLLM already serves (400 "already been
loaded") and unloading one it does not (404) succeed, so a daemon that restarted, or a
call retried after a timeout, converges on the decided state.

Note that vLLM's unload only forgets the name: the weights stay in the worker's LRU cache
(``--max-cpu-loras``) until newer adapters push them out. Size that cache to the daemon's
``parameter.slots`` so that every adapter the daemon keeps served fits in it.

Only the standard library is used (``urllib.request``): the daemon has no HTTP client
dependency.
"""

from __future__ import annotations

import errno
import http.client
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memos.errors import FailedPrecondition, InvalidArgument, MemosError, Unavailable
from memos.tiers.parameter.record import AdapterRecord

log = logging.getLogger(__name__)

LOAD_PATH = "/v1/load_lora_adapter"
UNLOAD_PATH = "/v1/unload_lora_adapter"
MODELS_PATH = "/v1/models"
RUNTIME_HINT = (
    "start it with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora "
    "--max-lora-rank R --max-cpu-loras K"
)


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: str

    def message(self) -> str:
        """vLLM's error message (its ErrorResponse, or FastAPI's ``detail``), else the body."""
        try:
            doc = json.loads(self.body)
        except ValueError:
            return self.body.strip()[:500]
        if isinstance(doc, dict):
            error = doc.get("error")
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                return str(error["message"])
            if isinstance(doc.get("message"), str):
                return str(doc["message"])
            if "detail" in doc:
                return str(doc["detail"])
        return self.body.strip()[:500]

    def is_route_missing(self) -> bool:
        """A 404 from the router itself: the endpoint does not exist on this server."""
        try:
            doc = json.loads(self.body)
        except ValueError:
            return False
        return isinstance(doc, dict) and doc.get("detail") == "Not Found"


class VLLMLoRASlots:
    """The slot driver for one vLLM server: ``load``, ``unload`` and ``served``.

    ``adapter_path`` maps the daemon's path of an adapter version to the path vLLM reads it
    from (the same by default: the server must see the daemon's adapter directory).
    """

    kind = "vllm"

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 60.0,
        api_key: str | None = None,
        adapter_path: Callable[[AdapterRecord], str] | None = None,
    ) -> None:
        url = url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise InvalidArgument(f"vLLM url {url!r} is not an http:// or https:// URL")
        self.url = url
        self.timeout_s = timeout_s
        self._api_key = api_key
        # Absolute: vLLM would resolve a relative path against its own working directory.
        self._adapter_path = adapter_path or (lambda record: str(Path(record.path).resolve()))

    def __repr__(self) -> str:
        return f"VLLMLoRASlots({self.url!r})"

    # -- the slot driver -------------------------------------------------------------------

    def load(self, key: str, record: AdapterRecord) -> None:
        """Serve ``record`` under the name ``key``; a name already served is left as is."""
        path = self._adapter_path(record)
        answer = self._post(LOAD_PATH, {"lora_name": key, "lora_path": path})
        if answer.status == 200:
            log.info("vLLM %s: loaded adapter %s (%s) from %s", self.url, key, record.ref, path)
            return
        message = answer.message()
        if answer.status == 400 and "already been loaded" in message:
            return
        if answer.status == 404 and answer.is_route_missing():
            raise FailedPrecondition(
                f"vLLM at {self.url} has no runtime LoRA endpoints: {RUNTIME_HINT}"
            )
        if answer.status == 404:
            raise FailedPrecondition(
                f"vLLM at {self.url} found no adapter at {path} for {record.ref}: {message}. "
                "The server must see the daemon's adapter directory (a shared volume); if it "
                "mounts it elsewhere, set parameter.vllm_adapters_dir"
            )
        raise self._refused("load", key, answer)

    def unload(self, key: str) -> None:
        """Stop serving ``key``; a name vLLM does not serve is already unloaded."""
        answer = self._post(UNLOAD_PATH, {"lora_name": key})
        if answer.status == 200:
            log.info("vLLM %s: unloaded adapter %s", self.url, key)
            return
        if answer.status == 404 and answer.is_route_missing():
            raise FailedPrecondition(
                f"vLLM at {self.url} has no runtime LoRA endpoints: {RUNTIME_HINT}"
            )
        if answer.status == 404:
            return
        raise self._refused("unload", key, answer)

    def served(self) -> dict[str, str]:
        """The adapters the server serves now: name -> the path it loaded it from."""
        answer = self._request("GET", MODELS_PATH, None)
        if answer.status != 200:
            raise self._refused("list the models of", "", answer)
        try:
            cards = json.loads(answer.body)["data"]
            return {str(c["id"]): str(c.get("root") or "") for c in cards if c.get("parent")}
        except (ValueError, KeyError, TypeError) as exc:
            raise FailedPrecondition(
                f"vLLM at {self.url} answered {MODELS_PATH} with something that is not a "
                f"model list: {exc}"
            ) from None

    # -- HTTP ------------------------------------------------------------------------------

    def _refused(self, what: str, key: str, answer: _Answer) -> MemosError:
        target = f" adapter {key}" if key else ""
        text = f"vLLM at {self.url} refused to {what}{target}: {answer.status} {answer.message()}"
        if answer.status in (401, 403):
            return FailedPrecondition(f"{text} (set parameter.vllm_api_key to its --api-key)")
        if answer.status in (502, 503, 504):
            return Unavailable(text)
        # 400 and 500: vLLM could not apply the adapter (rank over --max-lora-rank, LoRA
        # not enabled, a module it cannot serve): the server's configuration decides.
        return FailedPrecondition(text)

    def _post(self, path: str, body: dict[str, Any]) -> _Answer:
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> _Answer:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return _Answer(response.status, response.read().decode(errors="replace"))
        except urllib.error.HTTPError as exc:
            with exc:
                return _Answer(exc.code, exc.read().decode(errors="replace"))
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
            raise Unavailable(
                f"vLLM at {self.url} is unreachable ({_reason(exc, self.timeout_s)}): is the "
                f"server up? ({method} {path})"
            ) from None


def _reason(exc: BaseException, timeout_s: float) -> str:
    """Why a call failed, by errno name: memos's client reads the word "connect" in an
    UNAVAILABLE message as "memosd itself is unreachable", which would point at the wrong
    server."""
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    code = reason.errno if isinstance(reason, OSError) else None
    if code is not None and code in errno.errorcode:
        return errno.errorcode[code]
    return type(reason).__name__


def driver_from_settings(
    url: str,
    *,
    timeout_s: float,
    api_key: str | None,
    store_root: Path,
    vllm_root: Path | None,
) -> VLLMLoRASlots:
    """A driver mapping the store's paths under ``store_root`` to ``vllm_root`` (if set)."""
    if vllm_root is None:
        return VLLMLoRASlots(url, timeout_s=timeout_s, api_key=api_key)
    root = store_root.resolve()
    target = vllm_root

    def adapter_path(record: AdapterRecord) -> str:
        return str(target / Path(record.path).resolve().relative_to(root))

    return VLLMLoRASlots(url, timeout_s=timeout_s, api_key=api_key, adapter_path=adapter_path)
