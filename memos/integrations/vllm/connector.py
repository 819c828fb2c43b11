"""``MemCubeKVConnector``: vLLM reuses the KV blocks memosd stores, and stores the new ones.

Configure it with::

    --prefix-caching-hash-algo sha256_cbor
    --kv-transfer-config '{"kv_connector": "MemCubeKVConnector",
        "kv_connector_module_path": "memos.integrations.vllm.connector",
        "kv_role": "kv_both", "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": {"daemon": "127.0.0.1:50051",
                                      "token_file": "/var/run/secrets/memos/token"}}'

vLLM builds two instances. The scheduler's asks the daemon (``ActivationService.Lookup``,
non-blocking, pinned) how many leading blocks of a waiting request it holds, and plans, per
step, which blocks the worker loads and which newly computed prompt blocks it saves. The
worker's fetches planned blocks (``Fetch``) and copies them into the paged KV buffer before
the forward pass, and after the step copies out the blocks to save and hands them to a
background thread that sends them (``Store``), best-effort.

Keys are vLLM's own block hashes behind the engine's layout fingerprint (``layout.py``), so
the daemon computes the same keys from token ids. A daemon that is down, slow or missing a
chunk costs a recompute: failed blocks are reported through
``get_block_ids_with_load_errors`` and vLLM recomputes them (``kv_load_failure_policy`` must
be ``recompute``; with ``fail`` vLLM fails those requests instead).

Same host: with ``shared_dir`` (the engine's mount of the daemon's ``activation.shared_dir``)
the worker reads the chunk files the daemon names there instead of receiving the bytes. The
scheduler's Lookup sends the directory's id, and the daemon names the pinned chunks already
in it (held under the Lookup's lease): the worker reads those with no Fetch on the forward
pass's path and fetches only the rest (the Fetch names the lease, which releases it). A lease
no Fetch named is released by the scheduler once the loading step's output is back
(unreleased, it expires). A file it cannot use is fetched again as bytes. See
``transfer.py``. With the directory, Lookups and Releases go over the daemon's Unix socket
in it (``memos-lookup.sock``, ``memos.local_wire``) where it answers: gRPC's round trip is
what the scheduler waits for. The Lookup starts as the request arrives
(``on_new_request``) when Lookups are not queueing, and covers the prompt's last full block
too, which vLLM computes rather than loads: a block the daemon holds is never saved again.

Per request, ``kv_transfer_params`` may carry ``memos.load`` / ``memos.save`` (bools),
``memos.cube_ids`` (the cubes the prompt holds) and ``memos.hint`` (the one-bit hint: true
"will reuse soon", false "done with them"). Cube ids and hint ride on the request's Lookup,
and the daemon counts them as one read of each cube for its tier manager (as a Get would);
malformed ids are dropped here, so they never cost the load. A request that sets any
``memos.*`` key gets a report back in its output's ``kv_transfer_params``: tokens loaded,
blocks saved, and its block keys.

This module imports vLLM; the rest of ``memos.integrations.vllm`` does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import vllm
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)
from vllm.platforms import current_platform

from memos.client import MemosClient
from memos.client_activation import ActivationClient, LocalChunk
from memos.ids import ID_PATTERN
from memos.integrations.vllm.blocks import BlockCodec
from memos.integrations.vllm.layout import EngineLayout, UnsupportedLayout, layout_from_vllm
from memos.integrations.vllm.lookups import Hit, Lookups
from memos.integrations.vllm.settings import (
    PARAM_PREFIX,
    ConnectorSettings,
    RequestParams,
    request_params,
)
from memos.integrations.vllm.transfer import SaveJob, Saver, load_blocks
from memos.local_wire import SOCKET_NAME
from memos.tiers.activation.shared import SharedIdReader

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.attention.backend import AttentionMetadata
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

log = logging.getLogger(__name__)

__all__ = ["MemCubeKVConnector", "MemCubeMetadata"]


@dataclass
class LoadSpec:
    req_id: str
    block_ids: list[int]
    hashes: list[bytes]  # vLLM block hashes; each worker prefixes its rank's fingerprint
    leases: tuple[str, ...]  # one per tensor-parallel rank
    shared_dir: bool = True  # may load through the shared directory (the request's switch)
    # Per rank: the shared files (path, size) of these blocks the Lookup named, held under
    # the rank's lease; the worker reads them with no Fetch. Shorter than ``block_ids`` (or
    # empty) where the directory lacks the rest: those are fetched.
    files: tuple[tuple[tuple[str, int], ...], ...] = ()


@dataclass
class SaveSpec:
    req_id: str
    block_ids: list[int]
    hashes: list[bytes]


@dataclass
class MemCubeMetadata(KVConnectorMetadata):  # type: ignore[misc]
    """One step's plan, from the scheduler's connector to every worker's."""

    loads: list[LoadSpec] = field(default_factory=list)
    saves: list[SaveSpec] = field(default_factory=list)


@dataclass
class _RequestState:
    request: Request
    params: RequestParams
    local_tokens: int = 0  # the block-aligned local prefix hit, as last seen
    stored_blocks: int = 0  # leading full prompt blocks the daemon holds: never saved again
    load_start: int = 0
    load_blocks: int = 0
    load_pending: bool = False
    loaded_tokens: int = 0
    block_ids: list[int] = field(default_factory=list)
    saved: int = 0  # leading prompt blocks saved, or known to be stored already
    saved_blocks: int = 0  # blocks this request planned to save


class MemCubeKVConnector(KVConnectorBase_V1):  # type: ignore[misc]
    def __init__(
        self,
        vllm_config: VllmConfig,
        role: KVConnectorRole,
        kv_cache_config: KVCacheConfig,
    ) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        extra = self._kv_transfer_config.kv_connector_extra_config
        self.settings = ConnectorSettings.from_extra_config(extra)
        if self._kv_transfer_config.kv_load_failure_policy != "recompute":
            log.warning(
                "memos connector: kv_load_failure_policy is %r: a failed load will fail its "
                'request; set it to "recompute"',
                self._kv_transfer_config.kv_load_failure_policy,
            )
        self._block_size = int(vllm_config.cache_config.block_size)
        self._layout: EngineLayout | None = None
        self._layer_names: list[str] = []
        self.disabled_reason = ""
        tp_rank = 0
        if role == KVConnectorRole.WORKER:
            from vllm.distributed.parallel_state import get_tensor_model_parallel_rank

            tp_rank = get_tensor_model_parallel_rank()
        try:
            self._layout, self._layer_names = layout_from_vllm(
                vllm_config,
                kv_cache_config,
                tp_rank=tp_rank,
                vllm_version=vllm.__version__,
                device=_device_kind(vllm_config, kv_cache_config),
                model_id=self.settings.model_id,
            )
        except UnsupportedLayout as exc:
            self._disable(str(exc))
        self.stats: dict[str, int] = {
            "lookup_hit_tokens": 0,
            "loaded_blocks": 0,
            "load_failed_blocks": 0,
            "saved_blocks": 0,
            "dropped_saves": 0,
            "lookup_retries": 0,  # steps a request waited for its Lookup
            "lookup_wait_us": 0,  # time the scheduler spent waiting for Lookups
            "shared_dir_blocks": 0,  # of loaded_blocks, read from the shared directory
            "shared_dir_fallbacks": 0,  # shared files unusable, fetched again as bytes
            "fetchless_loads": 0,  # loads the Lookup's files covered: no Fetch round trip
            "load_us": 0,  # time spent loading, in the forward pass's way
            "save_copy_us": 0,  # time spent copying blocks out for saving
        }
        token = self.settings.bearer_token()
        # Separate channels: a slow Store never queues behind, or delays, a Lookup or Fetch.
        self._lookups: Lookups | None = None
        self._saver: Saver | None = None
        self._fetch_client: ActivationClient | None = None
        self._reqs: dict[str, _RequestState] = {}
        self._codec: BlockCodec | None = None
        self._load_errors: set[int] = set()
        self._channels: list[MemosClient] = []
        self._clients: list[ActivationClient] = []
        # Releases the holds a Fetch took on shared files, after the forward pass.
        self._releaser: ThreadPoolExecutor | None = None
        # Scheduler side: the leases of planned loads, by request, with the step that loads
        # them; released once that step's output is back.
        self._loading: dict[str, tuple[int, tuple[str, ...]]] = {}
        self._planned_steps = self._output_steps = 0
        self._stored = _StoredHashes(STORED_HASHES)
        shared = self.settings.shared_dir
        self._shared_id = SharedIdReader(shared) if shared is not None else None
        # Worker side: holds on files a Fetch named, released after the forward pass.
        self._holds: list[str] = []
        if self._layout is None:
            return
        if role == KVConnectorRole.SCHEDULER:
            lookup = self._client(token, self.settings.lookup_timeout_s, local=True)
            self._lookups = Lookups(
                lambda: lookup,
                inline_s=self.settings.lookup_inline_ms / 1000,
                timeout_s=self.settings.lookup_timeout_s,
                lease_ms=self.settings.lease_ms,
            )
            self._rank_layouts = [self._layout.for_rank(r) for r in range(self._layout.tp_size)]
        else:
            # Local too: it releases the holds a Fetch took on shared files.
            self._fetch_client = self._client(token, self.settings.load_timeout_s, local=True)
            if self.settings.shared_dir is not None:
                self._releaser = ThreadPoolExecutor(1, thread_name_prefix="memos-kv-release")
            store = self._client(token, self.settings.store_timeout_s)
            self._saver = Saver(
                lambda: store,
                self._layout.model_layout(),
                max_pending_bytes=self.settings.max_pending_store_bytes,
            )

    def _client(
        self, token: str | None, timeout_s: float, *, local: bool = False
    ) -> ActivationClient:
        """``local``: Lookup and Release over the daemon's socket in the shared directory
        where one answers (``lookup_socket``)."""
        channel = MemosClient(
            self.settings.daemon,
            token=token,
            tenant=self.settings.tenant,
            timeout=timeout_s,
            max_message_bytes=self.settings.max_message_bytes,
        )
        self._channels.append(channel)
        shared = self.settings.shared_dir
        socket = shared / SOCKET_NAME if local and shared and self.settings.lookup_socket else None
        client = ActivationClient(channel, local_socket=socket)
        self._clients.append(client)
        return client

    def _disable(self, reason: str) -> None:
        self.disabled_reason = reason
        self._layout = None
        log.error("memos connector: disabled, every request is computed by vLLM: %s", reason)

    @property
    def layout(self) -> EngineLayout | None:
        """This instance's layout (the worker's rank; rank 0 on the scheduler)."""
        return self._layout

    @property
    def requires_kv_delivery(self) -> bool:
        # A cache: a save that never happens is a future miss, not a lost hand-off.
        return False

    # ================================================================== scheduler side

    def _loadable(self, request: Request) -> int:
        """Leading blocks of ``request`` a load may cover: vLLM must compute at least the
        prompt's last token itself."""
        prompt = int(request.num_prompt_tokens)
        return min((prompt - 1) // self._block_size, len(request.block_hashes))

    def _lookup(self, request: Request, state: _RequestState, *, wait: bool) -> Hit | None:
        if self._lookups is None:
            return None
        # The Lookup covers every full prompt block, the last one too (vLLM computes its
        # last token, so it is never loaded): a block the daemon holds is never saved again.
        full = min(request.num_prompt_tokens // self._block_size, len(request.block_hashes))
        hashes = list(request.block_hashes[:full])
        params = state.params
        return self._lookups.get(
            request.request_id,
            [layout.keys_of(hashes) for layout in self._rank_layouts],
            cube_ids=params.cube_ids,
            hint=None if params.hint is None else ("reuse" if params.hint else "done"),
            shared_dir_id=self._shared_id if params.shared_dir else None,
            wait=wait,
        )

    def on_new_request(self, request: Request) -> None:
        """Start the request's Lookup as it arrives, not when the scheduler first gets to
        it: the round trip to the daemon then runs while vLLM prepares its step.

        Only while Lookups are not queueing (an engine that is backed up asks when it
        schedules, as before), and not when vLLM's own prefix cache already holds the
        blocks a load would cover (its last one).
        """
        if self._lookups is None or self._layout is None or self._lookups.busy():
            return
        state = self._state(request)
        loadable = self._loadable(request)
        if not state.params.load or loadable <= 0 or self._cached_locally(request, loadable):
            return
        self._lookup(request, state, wait=False)

    def _cached_locally(self, request: Request, blocks: int) -> bool:
        """Whether vLLM's prefix cache holds block ``blocks - 1`` of ``request`` (True when
        that cannot be told: the Lookup then waits for the scheduler, as before)."""
        manager: Any = getattr(self, "_kv_cache_manager", None)
        try:
            pool = manager.block_pool
            return pool.get_cached_block(request.block_hashes[blocks - 1], [0]) is not None
        except Exception:
            return True

    def get_num_new_matched_tokens(
        self, request: Request, num_computed_tokens: int
    ) -> tuple[int | None, bool]:
        if self._lookups is None or self._layout is None:
            return 0, False
        state = self._state(request)
        if not state.params.load:
            return 0, False
        loadable = self._loadable(request)
        if loadable * self._block_size <= num_computed_tokens:
            return 0, False
        started = time.perf_counter()
        hit = self._lookup(request, state, wait=True)
        self.stats["lookup_wait_us"] += int((time.perf_counter() - started) * 1e6)
        if hit is None:
            self.stats["lookup_retries"] += 1
            return None, False
        state.stored_blocks = hit.blocks
        state.local_tokens = num_computed_tokens
        hashes = request.block_hashes
        full = min(request.num_prompt_tokens // self._block_size, len(hashes))
        self._stored.update(hashes[: hit.blocks], hashes[hit.blocks : full])
        return max(0, min(hit.blocks, loadable) * self._block_size - num_computed_tokens), False

    def update_state_after_alloc(
        self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int
    ) -> None:
        if self._lookups is None:
            return
        state = self._reqs.get(request.request_id)
        if state is None:
            return
        if num_external_tokens <= 0:
            self._lookups.forget(request.request_id, release=True)
            return
        state.load_start = state.local_tokens // self._block_size
        state.load_blocks = num_external_tokens // self._block_size
        state.load_pending = state.load_blocks > 0
        state.loaded_tokens = num_external_tokens
        self.stats["lookup_hit_tokens"] += num_external_tokens

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        meta = MemCubeMetadata()
        if self._lookups is None:
            return meta
        # The end of this step's scheduling: the next step may wait for Lookups again.
        self._lookups.new_step()
        self._planned_steps += 1
        scheduled = scheduler_output.num_scheduled_tokens
        for new in scheduler_output.scheduled_new_reqs:
            state = self._reqs.get(new.req_id)
            if state is None:
                continue
            state.block_ids = list(new.block_ids[0])
            # Blocks computed before the request first ran came from vLLM's own prefix cache
            # (saved when they were computed) or from the daemon: only new blocks are saved.
            state.saved = max(state.saved, new.num_computed_tokens // self._block_size)
            self._plan_load(state, meta)
            self._plan_save(state, new.num_computed_tokens + scheduled.get(new.req_id, 0), meta)
        cached = scheduler_output.scheduled_cached_reqs
        resumed: set[str] = set(getattr(cached, "resumed_req_ids", None) or ())
        for i, req_id in enumerate(cached.req_ids):
            state = self._reqs.get(req_id)
            if state is None:
                continue
            new_ids = cached.new_block_ids[i]
            if req_id in resumed:
                # A resumed request's new_block_ids are all of its blocks.
                state.block_ids = list(new_ids[0]) if new_ids is not None else []
                self._plan_load(state, meta)
            elif new_ids is not None:
                state.block_ids.extend(new_ids[0])
            done = cached.num_computed_tokens[i] + scheduled.get(req_id, 0)
            self._plan_save(state, done, meta)
        return meta

    def _plan_load(self, state: _RequestState, meta: MemCubeMetadata) -> None:
        if not state.load_pending or self._lookups is None:
            return
        state.load_pending = False
        request = state.request
        start, end = state.load_start, state.load_start + state.load_blocks
        hit = self._lookups.answer(request.request_id)
        meta.loads.append(
            LoadSpec(
                req_id=request.request_id,
                block_ids=state.block_ids[start:end],
                hashes=[bytes(h) for h in request.block_hashes[start:end]],
                leases=hit.leases if hit is not None else (),
                shared_dir=state.params.shared_dir,
                files=tuple(rank[start:end] for rank in hit.files) if hit is not None else (),
            )
        )
        # The lease holds the blocks until the worker has loaded them. A worker that needs a
        # Fetch names it there, which releases it; one that reads only the files the Lookup
        # named does not: the lease is then released once this step's output is back
        # (update_connector_output), off the forward pass's path.
        fetchless = (
            hit is not None and bool(hit.files) and all(len(rank) >= end for rank in hit.files)
        )
        if fetchless and hit is not None and state.params.shared_dir and any(hit.leases):
            earlier = self._loading.pop(request.request_id, None)
            if earlier is not None:  # a resumed request loads again
                self._lookups.release(earlier[1])
            self._loading[request.request_id] = (self._planned_steps, hit.leases)
        self._lookups.forget(request.request_id, release=False)

    def update_connector_output(self, connector_output: Any) -> None:
        if self._lookups is None:
            return
        # Outputs come back in step order: every step planned up to this one has run. Were
        # an output skipped, leases are released later, never before their load.
        self._output_steps += 1
        done = [req_id for req_id, (step, _) in self._loading.items() if step <= self._output_steps]
        for req_id in done:
            self._lookups.release(self._loading.pop(req_id)[1])

    def _plan_save(self, state: _RequestState, computed: int, meta: MemCubeMetadata) -> None:
        if not state.params.save:
            return
        request = state.request
        full = min(computed, request.num_prompt_tokens) // self._block_size
        full = min(full, len(request.block_hashes), len(state.block_ids))
        start = max(state.saved, state.stored_blocks)
        hashes = request.block_hashes
        # Blocks this engine saved or was told the daemon holds: a prompt that vLLM's own
        # cache serves (no Lookup) would otherwise send its last blocks again every time.
        while start < full and self._stored.holds(hashes[start]):
            start += 1
        if full <= start:
            state.saved = max(state.saved, full)
            return
        meta.saves.append(
            SaveSpec(
                req_id=request.request_id,
                block_ids=state.block_ids[start:full],
                hashes=[bytes(h) for h in request.block_hashes[start:full]],
            )
        )
        state.saved_blocks += full - start
        state.saved = full
        self._stored.update(hashes[start:full], ())

    def request_finished(
        self, request: Request, block_ids: list[int]
    ) -> tuple[bool, dict[str, Any] | None]:
        if self._lookups is None:
            return False, None
        self._lookups.forget(request.request_id, release=True)
        loading = self._loading.pop(request.request_id, None)
        if loading is not None:
            self._lookups.release(loading[1])
        state = self._reqs.pop(request.request_id, None)
        if state is None or not state.params.report or self._layout is None:
            return False, None
        prompt_blocks = request.num_prompt_tokens // self._block_size
        report: dict[str, Any] = {
            PARAM_PREFIX + "loaded_tokens": state.loaded_tokens,
            PARAM_PREFIX + "saved_blocks": state.saved_blocks,
            PARAM_PREFIX + "block_size": self._block_size,
            PARAM_PREFIX + "fingerprint": self._layout.fingerprint.hex(),
            PARAM_PREFIX + "block_hashes": [
                bytes(h).hex() for h in request.block_hashes[:prompt_blocks]
            ],
        }
        if state.params.cube_ids:
            report[PARAM_PREFIX + "cube_ids"] = list(state.params.cube_ids)
        return False, report

    def _state(self, request: Request) -> _RequestState:
        state = self._reqs.get(request.request_id)
        if state is None:
            params = request_params(request.kv_transfer_params, self.settings)
            valid = tuple(i for i in params.cube_ids if ID_PATTERN.match(i))
            if len(valid) != len(params.cube_ids):
                # The daemon refuses a Lookup naming a malformed id: drop them, never the load.
                log.warning("memos connector: ignoring malformed ids in memos.cube_ids")
                params = dataclasses.replace(params, cube_ids=valid)
            state = _RequestState(request=request, params=params)
            self._reqs[request.request_id] = state
        return state

    # ==================================================================== worker side

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        if self._layout is None:
            return
        try:
            self._codec = BlockCodec(kv_caches, self._layer_names, self._layout)
        except UnsupportedLayout as exc:
            self._disable(str(exc))

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        if self._codec is None or self._fetch_client is None or not self.has_connector_metadata():
            return
        meta = self._get_connector_metadata()
        if not isinstance(meta, MemCubeMetadata) or not meta.loads:
            return
        rank = self._codec.layout.tp_rank
        started = time.perf_counter()
        for spec in meta.loads:
            lease = spec.leases[rank] if rank < len(spec.leases) else ""
            shared = self.settings.shared_dir if spec.shared_dir else None
            named = spec.files[rank] if rank < len(spec.files) and lease else ()
            result = load_blocks(
                self._fetch_client,
                self._codec,
                self._codec.layout.keys_of(spec.hashes),
                spec.block_ids,
                lease_id=lease,
                deadline=time.monotonic() + self.settings.load_timeout_s,
                shared_dir=shared,
                files=[LocalChunk(path=p, size=n, hold=lease) for p, n in named],
            )
            if not result.fetched:
                self.stats["fetchless_loads"] += 1
            self.stats["loaded_blocks"] += result.loaded
            self.stats["shared_dir_blocks"] += result.from_files
            self.stats["shared_dir_fallbacks"] += result.refetched
            # The Lookup's lease is the scheduler's to release; a Fetch's holds are released
            # after the forward pass, so the daemon's work on them never competes with it.
            self._holds.extend(h for h in result.holds if h != lease)
            if result.failed:
                self.stats["load_failed_blocks"] += len(result.failed)
                self._load_errors.update(result.failed)
        self.stats["load_us"] += int((time.perf_counter() - started) * 1e6)

    def wait_for_layer_load(self, layer_name: str) -> None:
        return

    def save_kv_layer(
        self,
        layer_name: str,
        kv_layer: torch.Tensor,
        attn_metadata: AttentionMetadata,
        **kwargs: Any,
    ) -> None:
        # Blocks are copied out whole, every layer at once, in wait_for_save.
        return

    def wait_for_save(self) -> None:
        if self._holds and self._releaser is not None:
            holds, self._holds = tuple(self._holds), []
            self._releaser.submit(self._release_holds, holds)
        if self._codec is None or self._saver is None or not self.has_connector_metadata():
            return
        meta = self._get_connector_metadata()
        if not isinstance(meta, MemCubeMetadata) or not meta.saves:
            return
        if self._load_errors:
            # This step's forward read blocks that failed to load: whatever it computed
            # after them is wrong, and vLLM recomputes it. Never store it.
            self.stats["dropped_saves"] += sum(len(s.block_ids) for s in meta.saves)
            return
        layout = self._codec.layout
        started = time.perf_counter()
        for spec in meta.saves:
            blocks, ready = self._codec.read_for_save(spec.block_ids)
            job = SaveJob(tuple(layout.keys_of(spec.hashes)), blocks, ready)
            if self._saver.submit(job):
                self.stats["saved_blocks"] += len(spec.block_ids)
            else:
                self.stats["dropped_saves"] += len(spec.block_ids)
        self.stats["save_copy_us"] += int((time.perf_counter() - started) * 1e6)

    def _release_holds(self, holds: tuple[str, ...]) -> None:
        client = self._fetch_client
        if client is None:
            return
        for hold in holds:
            # Best effort: an unreleased hold expires in the daemon (activation.pin_lease_s).
            with contextlib.suppress(Exception):
                client.release(hold)

    def get_block_ids_with_load_errors(self) -> set[int]:
        errors, self._load_errors = self._load_errors, set()
        return errors

    def wait_for_saves(self, timeout_s: float = 30.0) -> bool:
        """Block until every queued save was sent (tests and benchmarks use it)."""
        return self._saver.wait_idle(timeout_s) if self._saver is not None else True

    def shutdown(self) -> None:
        if self._releaser is not None:
            self._releaser.shutdown(wait=True)
        if self._saver is not None:
            self._saver.close()
        if self._lookups is not None:
            self._lookups.close()
        for client in self._clients:
            client.close()
        for channel in self._channels:
            channel.close()


#: vLLM block hashes the scheduler remembers as stored in the daemon (about 100 bytes each).
STORED_HASHES = 65_536


class _StoredHashes:
    """The block hashes this engine saved, or a Lookup found stored, most recent last.

    A save is skipped for them. Wrong only when the daemon evicted one, or a save failed:
    the next Lookup over it finds it missing (and forgets it), vLLM computes it, and it is
    saved again; meanwhile it costs misses, never a wrong block.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._hashes: OrderedDict[bytes, None] = OrderedDict()

    def holds(self, block_hash: Any) -> bool:
        return bytes(block_hash) in self._hashes

    def update(self, stored: Sequence[Any], missing: Sequence[Any]) -> None:
        hashes = self._hashes
        for h in missing:
            hashes.pop(bytes(h), None)
        for h in stored:
            key = bytes(h)
            hashes[key] = None
            hashes.move_to_end(key)
        while len(hashes) > self._capacity:
            hashes.popitem(last=False)


def _device_kind(vllm_config: VllmConfig, kv_cache_config: KVCacheConfig) -> str:
    """The device type, and on CPU the attention kernel family, which packs blocks its way."""
    device = str(current_platform.device_type)
    if device != "cpu":
        return device
    try:
        from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

        spec = kv_cache_config.kv_cache_groups[0].kv_cache_spec
        isa = _get_attn_isa(
            spec.dtype, spec.block_size, spec.head_size, vllm_config.cache_config.cache_dtype
        )
    except Exception:  # a CPU build without it: blocks are still read back exactly
        isa = "unknown"
    return f"cpu-{isa}"
