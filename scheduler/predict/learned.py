"""An online learned bit predictor that never sees the future.

A small logistic model scores P(y = 1) for each request from features of the past only:
recency, the last inter-arrival gaps, exponentially decayed frequencies at several
half-lives (LRB's EDCs), access count, size, item kind and a hashed tenant. Labels arrive
late and are computed from the trace itself, never from an oracle:

- ``kind="phase"``: y = "the page is requested in the next k-phase". Exact, and known as
  soon as that next phase ends (at most two phases after the request).
- ``kind="discard"``: y = "Belady evicts the page before its next request", reconstructed
  on a sliding window of past requests (Hawkeye's OPTgen idea): every ``block`` requests,
  LFD runs on the last ``3 * block`` requests and labels the middle block (the first block
  warms the cache, the last one is the look-ahead). A request whose page is not requested
  again inside the window is labelled 1.

The decision threshold follows the asymmetric cost of the two error types: emit the bit
whose expected cost is lower, given ``fe_cost`` (a false "evict") and ``fk_cost`` (a false
"keep", the expensive one), i.e. emit "discard" iff P > c_FE / (c_FE + c_FK). The ratio
c_FK / c_FE is not known in advance (k - 1 in the worst case, about 10 measured on
BrightKite with oracle bits, less with learned ones), so by default the predictor picks it
online among ``replay_ratios``: each candidate threshold drives a metadata-only shadow of
the policy the bits feed (Mark0, or Mark&Predict for phase bits) on the same past
requests, and the candidate with the fewest recent (cost-weighted) misses wins ("tune the
threshold by replay", ``research/paging.md`` §8). Client hints (a bit sent with the
request) either override the model or enter it as features (``hint_mode``).

Online and causal by construction: ``bit()`` for request t reads the model as trained by
labels that matured before t. Per request the work is O(features) plus amortised
O(log k) for the windowed LFD.
"""

from __future__ import annotations

import math
import operator
import zlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from scheduler.policies.classic import Belady
from scheduler.policies.one_bit import Mark0, MarkPredict
from scheduler.policy import Policy

Kind = Literal["discard", "phase"]
HintMode = Literal["override", "feature"]

_LN2 = math.log(2.0)


@dataclass(frozen=True, slots=True)
class LearnedConfig:
    """Settings of the learned predictor (times are in requests)."""

    kind: Kind
    #: Cache capacity in items: sets the time scales (half-lives, label blocks).
    k: int
    #: For a sized cache, its byte budget: discard labels and the replay then use sizes.
    budget: int | None = None
    fe_cost: float = 1.0
    fk_cost: float = 10.0
    learning_rate: float = 0.1
    l2: float = 1e-6
    #: Discard labels: requests per labelling block (default ``8 * k``).
    block: int | None = None
    #: EDC half-lives as multiples of k.
    half_lives: tuple[float, ...] = (0.5, 2.0, 8.0, 32.0)
    hash_buckets: int = 4096
    hint_mode: HintMode = "override"
    #: Pick the cost ratio fk_cost / fe_cost online among these by replaying each candidate
    #: threshold on a shadow of the policy the bits feed (empty: use ``fk_cost`` as is).
    replay_ratios: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    #: Requests per half-window of the replay's miss counts (default ``64 * k``).
    replay_window: int | None = None
    #: Add a hashed feature of the key itself (a learned per-page bias).
    key_feature: bool = False

    @property
    def threshold(self) -> float:
        """Emit 1 iff P(y = 1) exceeds this (before any replay tuning)."""
        return threshold_for(self.kind, self.fe_cost, self.fk_cost)


def threshold_for(kind: Kind, fe_cost: float, fk_cost: float) -> float:
    """The threshold on P(y = 1) at which both bits have the same expected error cost."""
    if kind == "discard":
        # A wrong 1 is a false evict, a wrong 0 a false keep.
        return fe_cost / (fe_cost + fk_cost)
    return fk_cost / (fe_cost + fk_cost)


@dataclass(slots=True)
class _History:
    """What the predictor remembers about one key."""

    last: int
    count: int = 1
    gaps: list[float] = field(default_factory=list)
    edc: list[float] = field(default_factory=list)


def _bucket(tag: str, value: object, buckets: int) -> int:
    return zlib.crc32(f"{tag}\x00{value}".encode()) % buckets


class OnlineLogistic:
    """Logistic regression trained by AdaGrad SGD with L2, over dense plus hashed features."""

    def __init__(self, n_dense: int, buckets: int, learning_rate: float, l2: float) -> None:
        self.w = [0.0] * n_dense
        self._g2 = [1e-8] * n_dense
        self.hashed: dict[int, float] = {}
        self._hashed_g2: dict[int, float] = {}
        self.buckets = buckets
        self.lr = learning_rate
        self.l2 = l2
        self.updates = 0

    def score(self, x: Sequence[float], hashed: Sequence[int]) -> float:
        z = sum(map(operator.mul, self.w, x))
        hw = self.hashed
        for h in hashed:
            z += hw.get(h, 0.0)
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def update(self, x: Sequence[float], hashed: Sequence[int], y: int) -> None:
        g = self.score(x, hashed) - y
        w, g2, lr, l2 = self.w, self._g2, self.lr, self.l2
        for i, xi in enumerate(x):
            gi = g * xi + l2 * w[i]
            g2[i] += gi * gi
            w[i] -= lr * gi / math.sqrt(g2[i])
        hw, hg2 = self.hashed, self._hashed_g2
        for h in hashed:
            wi = hw.get(h, 0.0)
            gi = g + l2 * wi
            acc = hg2.get(h, 1e-8) + gi * gi
            hg2[h] = acc
            hw[h] = wi - lr * gi / math.sqrt(acc)
        self.updates += 1


class BitPredictor:
    """Online bits for one cache of capacity ``config.k``: call ``bit()`` once per request."""

    def __init__(self, config: LearnedConfig) -> None:
        self.config = config
        k = config.k
        self._decay = [_LN2 / (h * k) for h in config.half_lives]
        self._scale = math.log1p(8.0 * k)
        self.model = OnlineLogistic(
            self.n_features, config.hash_buckets, config.learning_rate, config.l2
        )
        self.block = config.block or 8 * k
        self.labelled = 0
        #: Matured labels scored against the bit that was emitted: (false evicts, false keeps).
        self.errors = [0, 0]
        fe = config.fe_cost
        ratios = config.replay_ratios
        self.thresholds = [threshold_for(config.kind, fe, fe * r) for r in ratios] or [
            config.threshold
        ]
        # Start from the configured cost ratio (the nearest candidate).
        self.choice = min(
            range(len(self.thresholds)),
            key=lambda j: abs(math.log(ratios[j] * fe / config.fk_cost)) if ratios else 0.0,
        )
        self._replay_half = config.replay_window or 64 * k
        self._replay_tick = 0
        self._replay_prev = [0.0] * len(ratios)
        self._replay_cur = [0.0] * len(ratios)
        self._shadows: list[Policy] = []
        self.new_trace()

    @property
    def threshold(self) -> float:
        """The threshold in use now."""
        return self.thresholds[self.choice]

    @property
    def n_features(self) -> int:
        # bias, first-seen, recency, 3 gaps (+3 present flags), EDCs, count, log size,
        # 2 hint flags
        return 1 + 1 + 1 + 6 + len(self.config.half_lives) + 1 + 1 + 2

    def new_trace(self) -> None:
        """Forget per-key history and pending labels; keep the learned weights."""
        self.t = 0
        self._hist: dict[Hashable, _History] = {}
        # Discard labels: the window of (key, features, hashed, emitted bit).
        self._window: list[tuple[Hashable, list[float], list[int], int, int]] = []
        # Phase labels: phases i-1 and i pending, per page its last request's sample.
        self._phase_pages: set[Hashable] = set()
        self._pending_prev: dict[Hashable, tuple[list[float], list[int], int]] = {}
        self._pending_cur: dict[Hashable, tuple[list[float], list[int], int]] = {}
        cfg = self.config
        self._shadows = [
            Mark0(cfg.budget or cfg.k) if cfg.kind == "discard" else MarkPredict(cfg.k)
            for _ in cfg.replay_ratios
        ]

    def _features(
        self,
        key: Hashable,
        size: int,
        item_kind: str | None,
        tenant: str | None,
        hint: int | None,
        *,
        commit: bool,
    ) -> tuple[list[float], list[int]]:
        """Features of a request of ``key`` now; ``commit`` records it in the key's history."""
        t = self.t
        cfg = self.config
        scale = self._scale
        h = self._hist.get(key)
        if h is None:
            first, recency, count, dt = 1.0, 1.0, 0.0, 0
            gaps: list[float] = []
            edc = [1.0] * len(self._decay)
        else:
            first = 0.0
            dt = t - h.last
            recency = math.log1p(dt) / scale
            count = math.log1p(h.count) / scale
            gaps = [recency, *h.gaps[:2]]
            edc = [e * math.exp(-lam * dt) + 1.0 for e, lam in zip(h.edc, self._decay, strict=True)]
        if commit:
            if h is None:
                self._hist[key] = _History(last=t, count=1, gaps=gaps, edc=edc)
            else:
                h.last, h.gaps, h.edc = t, gaps, edc
                h.count += 1
        x = [1.0, first, recency]
        for j in range(3):
            if j < len(gaps):
                x.append(gaps[j])
                x.append(1.0)
            else:
                x.append(0.0)
                x.append(0.0)
        x.extend(math.log1p(e) / scale for e in edc)
        x.append(count)
        x.append(math.log1p(size) / 32.0)
        x.append(1.0 if hint == 1 else 0.0)
        x.append(1.0 if hint == 0 else 0.0)
        buckets = cfg.hash_buckets
        # Coarse buckets and their crosses let a linear model bend: recency x frequency.
        # (Tuples of ints hash the same in every process, unlike strings.)
        rb = int(recency * 8.0) if not first else -1
        fb = [int(v * 8.0) for v in x[9 : 9 + len(edc)]]
        hashed = [
            hash((1, rb)) % buckets,
            hash((2, rb, fb[0])) % buckets,
            hash((3, rb, fb[-2])) % buckets,
            hash((4, fb[1], fb[-1])) % buckets,
        ]
        if item_kind is not None:
            hashed.append(_bucket("kind", item_kind, buckets))
        if tenant is not None:
            hashed.append(_bucket("tenant", tenant, buckets))
        if cfg.key_feature:
            hashed.append(_bucket("key", key, buckets))
        return x, hashed

    def peek(
        self,
        key: Hashable,
        *,
        size: int = 1,
        item_kind: str | None = None,
        tenant: str | None = None,
        hint: int | None = None,
    ) -> float:
        """P(y = 1) for a request of ``key`` now, without recording the request."""
        x, hashed = self._features(key, size, item_kind, tenant, hint, commit=False)
        return self.model.score(x, hashed)

    def bit(
        self,
        key: Hashable,
        *,
        size: int = 1,
        cost: float = 1.0,
        item_kind: str | None = None,
        tenant: str | None = None,
        hint: int | None = None,
    ) -> int:
        """The bit for this request (then the request joins the history and the labellers).

        ``hint`` is the client's bit in this predictor's convention, or None.
        """
        cfg = self.config
        use_hint = hint is not None and cfg.hint_mode == "override"
        x, hashed = self._features(
            key, size, item_kind, tenant, None if use_hint else hint, commit=True
        )
        if use_hint:
            b = 1 if hint else 0
            if self._shadows:
                self._replay(key, size, cost, None, b)
        else:
            p = self.model.score(x, hashed)
            b = 1 if p > self.thresholds[self.choice] else 0
            if self._shadows:
                self._replay(key, size, cost, p, b)
        if cfg.kind == "discard":
            self._observe_discard(key, x, hashed, b, size)
        else:
            self._observe_phase(key, x, hashed, b)
        self.t += 1
        return b

    def _replay(self, key: Hashable, size: int, cost: float, p: float | None, hint: int) -> None:
        cur = self._replay_cur
        if self.config.kind == "phase":
            size = 1  # Mark&Predict is unit-size
        for j, (shadow, tau) in enumerate(zip(self._shadows, self.thresholds, strict=True)):
            b = hint if p is None else (1 if p > tau else 0)
            if not shadow.request(key, size, cost, b).hit:
                cur[j] += cost
        self._replay_tick += 1
        if self._replay_tick >= self._replay_half:
            self._replay_tick = 0
            prev = self._replay_prev
            total = [a + c for a, c in zip(prev, cur, strict=True)]
            best = min(range(len(total)), key=total.__getitem__)
            if total[best] < total[self.choice]:
                self.choice = best
            self._replay_prev = cur
            self._replay_cur = [0.0] * len(cur)

    def _learn(self, x: list[float], hashed: list[int], y: int, emitted: int) -> None:
        self.model.update(x, hashed, y)
        self.labelled += 1
        if emitted != y:
            keep = 0 if self.config.kind == "discard" else 1
            self.errors[0 if y == keep else 1] += 1

    def _observe_discard(
        self, key: Hashable, x: list[float], hashed: list[int], b: int, size: int
    ) -> None:
        window = self._window
        window.append((key, x, hashed, b, size))
        block = self.block
        if len(window) < 3 * block:
            return
        keys = [w[0] for w in window]
        budget = self.config.budget
        opt = Belady(budget or self.config.k, keys)
        if budget is None:
            for key_ in keys:
                opt.request(key_)
        else:
            for w in window:
                opt.request(w[0], w[4])
        labels = [0] * len(keys)
        for s in opt.evicted_at:
            labels[s] = 1
        horizon = len(keys)
        nxt: dict[Hashable, int] = {}
        for s in range(horizon - 1, block - 1, -1):
            key_ = keys[s]
            if s < 2 * block:
                y = 1 if labels[s] or key_ not in nxt else 0
                _, xs, hs, bs, _ = window[s]
                self._learn(xs, hs, y, bs)
            nxt[key_] = s
        del window[:block]

    def _observe_phase(self, key: Hashable, x: list[float], hashed: list[int], b: int) -> None:
        pages = self._phase_pages
        if key not in pages:
            if len(pages) == self.config.k:
                # Phase i ends: the samples of phase i-1 are labelled by phase i's pages.
                for key_, (xs, hs, bs) in self._pending_prev.items():
                    self._learn(xs, hs, 1 if key_ in pages else 0, bs)
                self._pending_prev = self._pending_cur
                self._pending_cur = {}
                self._phase_pages = pages = set()
            pages.add(key)
        # Only a page's last request in a phase carries the bit a policy keeps.
        self._pending_cur.pop(key, None)
        self._pending_cur[key] = (x, hashed, b)


def learned_bits(traces: Sequence[Sequence[Hashable]], config: LearnedConfig) -> list[list[int]]:
    """Bits for several traces, one model carried across them in order (online throughout)."""
    predictor = BitPredictor(config)
    out = []
    for keys in traces:
        predictor.new_trace()
        out.append([predictor.bit(key) for key in keys])
    return out
