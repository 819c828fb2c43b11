"""The engine's LoRA slots as a cache of k adapters, managed by a scheduler policy.

Every inference request naming an adapter is a page request. ``AdapterSlots.request``
answers what the engine must do before serving it: nothing (a hit), or load the adapter and
first unload the ones the policy evicted. It decides only; the caller carries the decision
out (peft on the HF engine, the runtime load/unload endpoints on vLLM).

The one-bit hint: a request may carry the client's bit in the discard convention (1 = "this
session is done with the adapter": it may go before its next use). With a one-bit policy
the bit the policy reads comes from the scheduler's online learned predictor, which sees
the client's hint as a feature and never the future; without a predictor the hint is
passed through as is. ``pin`` keeps an adapter loaded (e.g. while a batch is running on it).

With a ``driver`` (a :class:`SlotDriver`: the peft engine's or a vLLM server's slots),
``serve`` also carries the decision out, so the daemon itself keeps the engine in step with
the policy. Decisions and their execution are serialised; a failed load is taken back from
the policy, and an unload that failed is retried before the next decision is carried out.

``resync`` brings the policy's view and the engine back together: what the engine no
longer serves (a vLLM server that restarted serves nothing) is dropped from the policy, so
that its next request is a miss that loads it again, rather than a hit the engine cannot
serve; a version id the engine serves but the policy does not hold (an unload that failed,
a previous daemon run) is unloaded; any other name the engine serves was loaded by vLLM's
LoRA resolver (``memos.integrations.vllm.lora_resolver``) and is taken in as a page
request, so it occupies a slot and the policy's evictions unload it too. It runs after a
driver call failed (before the next decision), and every ``parameter.vllm_resync_s`` s in a
background thread (``start_resync``), which ``resync_soon`` wakes early.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from memos.errors import FailedPrecondition, InvalidArgument, MemosError, ResourceExhausted
from memos.ids import is_valid_id
from memos.tiers.parameter.record import AdapterRecord
from scheduler.policy import Policy
from scheduler.predict.learned import BitPredictor, LearnedConfig
from scheduler.registry import make_policy, policy_info

log = logging.getLogger(__name__)

DEFAULT_POLICY = "robust-mark0"


@dataclass(frozen=True, slots=True)
class SlotDecision:
    """What serving one request needs: unload ``unload`` first, then load ``load``."""

    hit: bool
    load: str | None = None
    unload: tuple[str, ...] = ()
    #: The bit the policy was given (after the predictor), or None.
    bit: int | None = None


class SlotDriver(Protocol):
    """An engine's adapter slots, as the daemon drives them. Both calls are idempotent:
    loading a key the engine serves, or unloading one it does not, does nothing."""

    #: What the engine is: "peft", "vllm".
    kind: str

    def load(self, key: str, record: AdapterRecord) -> None:
        """Serve adapter version ``record`` under the name ``key``."""
        ...

    def unload(self, key: str) -> None:
        """Stop serving ``key`` and free its slot."""
        ...

    def served(self) -> Collection[str]:
        """The adapter names the engine serves now."""
        ...


@dataclass(frozen=True, slots=True)
class Resync:
    """What ``AdapterSlots.resync`` changed."""

    #: Keys the policy held that the engine no longer served: dropped from the policy.
    lost: tuple[str, ...] = ()
    #: Names the engine served that the daemon had not loaded (vLLM's resolver): taken in.
    adopted: tuple[str, ...] = ()
    #: Names unloaded from the engine (no slot for them in the policy).
    unloaded: tuple[str, ...] = ()


@dataclass(slots=True)
class SlotStats:
    requests: int = 0
    hits: int = 0
    loads: int = 0
    unloads: int = 0

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0


class AdapterSlots:
    """k engine slots under the policy called ``policy`` (``scheduler.make_policy``).

    ``learned`` (default True) feeds a one-bit policy the online learned predictor's bits
    (with client hints as features); False passes client hints through unchanged.
    """

    def __init__(
        self,
        k: int,
        policy: str = DEFAULT_POLICY,
        *,
        learned: bool = True,
        seed: int = 0,
        driver: SlotDriver | None = None,
        **policy_kwargs: Any,
    ) -> None:
        if k < 1:
            raise InvalidArgument(f"an engine needs at least one adapter slot, got k={k}")
        info = policy_info(policy)
        self.k = k
        self.policy_name = policy
        self.bit_kind = info.bit_kind
        self.pinnable = info.pinnable
        self.policy: Policy = make_policy(policy, k, seed=seed, **policy_kwargs)
        self.predictor: BitPredictor | None = None
        if learned and info.bit_kind != "none":
            self.predictor = BitPredictor(
                LearnedConfig(kind=info.bit_kind, k=k, key_feature=True, hint_mode="feature")
            )
        self.stats = SlotStats()
        self.driver = driver
        self._lock = threading.Lock()
        # Held while a decision is carried out on the driver: one engine change at a time.
        self._serve_lock = threading.Lock()
        # Keys the engine may still serve although the policy no longer holds them (an
        # unload that failed): unloaded before the next decision is carried out.
        self._stale: list[str] = []
        # What the daemon believes the engine serves (driver mode): the policy's keys plus
        # the stale ones. ``resync`` checks it against the engine.
        self._engine: set[str] = set()
        # A driver call failed: the engine may have restarted; resync before the next one.
        self._suspect = False
        self._resyncs = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._due = float("inf")
        self._every_s = 0.0
        self._thread: threading.Thread | None = None

    def request(self, adapter_id: str, bit: int | None = None) -> SlotDecision:
        """Account one request for ``adapter_id``; ``bit`` is the client's discard hint."""
        if bit not in (None, 0, 1):
            raise InvalidArgument(f"the hint bit is 0, 1 or absent, got {bit!r}")
        with self._lock:
            b = self._bit(adapter_id, bit)
            out = self.policy.request(adapter_id, 1, 1.0, b)
            if not out.admitted:
                raise ResourceExhausted(
                    f"all {self.k} adapter slots are pinned: cannot load {adapter_id!r}"
                )
            stats = self.stats
            stats.requests += 1
            if out.hit:
                stats.hits += 1
                return SlotDecision(True, bit=b)
            evicted = tuple(str(key) for key in out.evicted)
            stats.loads += 1
            stats.unloads += len(evicted)
            return SlotDecision(False, adapter_id, evicted, b)

    def serve(
        self, record: AdapterRecord, bit: int | None = None, *, unload_first: Sequence[str] = ()
    ) -> SlotDecision:
        """``request`` the adapter version ``record`` (keyed by its id) and carry the
        decision out on the driver: ``unload_first`` (keys of deleted adapters) and the
        policy's victims are unloaded, then ``record`` is loaded.

        The returned decision's ``unload`` lists every key unloaded. If the engine fails
        (its error propagates), a load is taken back from the policy (the adapter is not
        loaded), and the keys not unloaded are kept to be unloaded by the next call.
        """
        driver = self.driver
        if driver is None:
            raise FailedPrecondition(
                'these adapter slots drive no engine (parameter.engine is "caller"): '
                "the caller carries the decisions out"
            )
        key = record.id
        with self._serve_lock:
            if self._suspect:
                self._resync(driver)
            if unload_first:
                with self._lock:
                    for gone in unload_first:
                        self.policy.remove(gone)
            decision = self.request(key, bit)
            with self._lock:
                stale, self._stale = self._stale, []
            todo = list(dict.fromkeys((*stale, *unload_first, *decision.unload)))
            todo = [k for k in todo if k != key]
            for i, victim in enumerate(todo):
                try:
                    driver.unload(victim)
                except Exception:
                    with self._lock:
                        self._stale.extend(todo[i:])
                    if decision.load is not None:
                        self.remove(key)
                    self._suspect = True
                    raise
                self._engine.discard(victim)
            if decision.load is not None:
                try:
                    driver.load(key, record)
                except Exception:
                    self.remove(key)
                    self._suspect = True
                    raise
                self._engine.add(key)
            return SlotDecision(decision.hit, decision.load, tuple(todo), decision.bit)

    # -- keeping the policy's view and the engine together ---------------------------------

    def resync(self) -> Resync:
        """Check the policy's view against what the engine serves, and converge."""
        driver = self.driver
        if driver is None:
            raise FailedPrecondition("these adapter slots drive no engine: nothing to resync")
        with self._serve_lock:
            return self._resync(driver)

    def _resync(self, driver: SlotDriver) -> Resync:
        served = set(driver.served())
        self._resyncs += 1
        engine = self._engine
        with self._lock:
            lost = sorted(key for key in engine if key not in served)
            for key in lost:
                # Lazily: its next request loads it again, as after any eviction.
                self.policy.remove(key)
                engine.discard(key)
            self._stale = [key for key in self._stale if key in served]
        adopted: list[str] = []
        unload: list[str] = []
        for name in sorted(served - engine):
            if is_valid_id(name):
                unload.append(name)  # a daemon key without a slot: a leftover
                continue
            try:
                decision = self.request(name)
            except ResourceExhausted:
                unload.append(name)  # every slot is pinned: no room for it
                continue
            engine.add(name)
            adopted.append(name)
            unload.extend(decision.unload)
        done: list[str] = []
        for name in dict.fromkeys(unload):
            try:
                driver.unload(name)
            except Exception:
                with self._lock:
                    self._stale.append(name)
                self._suspect = True
                raise
            engine.discard(name)
            done.append(name)
        self._suspect = False
        result = Resync(tuple(lost), tuple(adopted), tuple(done))
        if lost or adopted or done:
            log.warning(
                "adapter slots resynced with the %s engine: %d lost (dropped from the "
                "policy), %d loaded by the engine itself (taken in), %d unloaded",
                getattr(driver, "kind", "?"),
                len(lost),
                len(adopted),
                len(done),
            )
        return result

    @property
    def resyncs(self) -> int:
        """How many times the slots were checked against the engine."""
        return self._resyncs

    def start_resync(self, every_s: float) -> None:
        """Resync every ``every_s`` seconds in a background thread, until ``close``."""
        if self.driver is None or self._thread is not None:
            return
        if every_s <= 0:
            raise InvalidArgument(f"the resync interval must be > 0 seconds, got {every_s}")
        self._every_s = every_s
        self._due = time.monotonic() + every_s
        self._thread = threading.Thread(target=self._watch, name="adapter-resync", daemon=True)
        self._thread.start()

    def resync_soon(self, delay_s: float = 1.0) -> None:
        """Have the background thread resync within ``delay_s`` seconds (e.g. once vLLM's
        resolver has loaded an adapter the daemon just sent it)."""
        if self._thread is None:
            return
        self._due = min(self._due, time.monotonic() + delay_s)
        self._wake.set()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(max(0.0, self._due - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                return
            if time.monotonic() < self._due:
                continue
            self._due = time.monotonic() + self._every_s
            try:
                self.resync()
            except MemosError as exc:
                # The engine is down or refuses: the next decision resyncs first.
                self._suspect = True
                log.warning("adapter slots: cannot resync with the engine: %s", exc)
            except Exception:
                self._suspect = True
                log.exception("adapter slots: resync failed")

    def close(self) -> None:
        """Stop the background resync."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)

    def _bit(self, adapter_id: str, hint: int | None) -> int | None:
        kind = self.bit_kind
        if kind == "none":
            return None
        # A phase bit says "needed again soon": the opposite sense of the discard hint.
        own = hint if hint is None or kind == "discard" else 1 - hint
        if self.predictor is not None:
            return self.predictor.bit(adapter_id, hint=own)
        return own

    def pin(self, adapter_id: str) -> None:
        """Keep a loaded adapter in its slot until ``unpin`` (pins nest)."""
        if not self.pinnable:
            raise FailedPrecondition(f"policy {self.policy_name!r} does not support pinning")
        with self._lock:
            try:
                self.policy.pin(adapter_id)
            except KeyError:
                raise FailedPrecondition(f"adapter {adapter_id!r} is not loaded") from None

    def unpin(self, adapter_id: str) -> None:
        with self._lock:
            try:
                self.policy.unpin(adapter_id)
            except (KeyError, NotImplementedError):
                raise FailedPrecondition(f"adapter {adapter_id!r} is not pinned") from None

    def is_pinned(self, adapter_id: str) -> bool:
        return self.policy.is_pinned(adapter_id)

    def remove(self, adapter_id: str) -> bool:
        """Forget ``adapter_id`` (deleted): True if it held a slot, which the caller frees."""
        with self._lock:
            return self.policy.remove(adapter_id)

    def __contains__(self, adapter_id: object) -> bool:
        return adapter_id in self.policy

    def __len__(self) -> int:
        return len(self.policy)


def carry_out(
    decision: SlotDecision,
    load: Callable[[str], None],
    unload: Callable[[str], None],
) -> None:
    """Apply ``decision`` to an engine: its unloads first (freeing slots), then its load."""
    for adapter_id in decision.unload:
        unload(adapter_id)
    if decision.load is not None:
        load(decision.load)
