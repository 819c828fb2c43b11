"""The online learned predictor: causal, cost-thresholded, hint-aware, and useful."""

from __future__ import annotations

import random

import pytest

from scheduler.experiment import evaluate
from scheduler.predict.learned import (
    BitPredictor,
    LearnedConfig,
    OnlineLogistic,
    learned_bits,
    threshold_for,
)
from scheduler.predict.sources import BitSpec
from tests.scheduler._traces import K, traces

LRU = {"brightkite": 28_816, "citibike": 144_553}


@pytest.mark.parametrize("kind", ["discard", "phase"])
def test_bits_never_depend_on_the_future(kind: str) -> None:
    keys = traces("citibike")[0][:6_000]
    config = LearnedConfig(kind=kind, k=100)  # type: ignore[arg-type]
    full = learned_bits([keys], config)[0]
    cut = 4_000
    rng = random.Random(3)
    other_future = keys[:cut] + [rng.choice(keys) for _ in range(len(keys) - cut)]
    changed = learned_bits([other_future], config)[0]
    prefix = learned_bits([keys[:cut]], config)[0]
    assert full[:cut] == changed[:cut] == prefix
    # ... although labels matured and trained the model well before the cut.
    probe = BitPredictor(config)
    for key in keys[:cut]:
        probe.bit(key)
    assert probe.labelled > 1_000 and probe.model.updates == probe.labelled


def test_threshold_follows_the_asymmetric_error_costs() -> None:
    # Discard bits: emit 1 ("evict") iff P(discard) > c_FE / (c_FE + c_FK).
    assert threshold_for("discard", 1.0, 9.0) == pytest.approx(0.1)
    # Phase bits: emit 1 ("needed") iff P(needed) > c_FK / (c_FE + c_FK).
    assert threshold_for("phase", 1.0, 9.0) == pytest.approx(0.9)
    fixed = BitPredictor(LearnedConfig(kind="discard", k=10, fk_cost=3.0, replay_ratios=()))
    assert fixed.threshold == pytest.approx(0.25)
    tuned = BitPredictor(LearnedConfig(kind="discard", k=10, fk_cost=4.0))
    assert tuned.threshold == pytest.approx(0.2)  # starts at the configured ratio


def test_online_logistic_learns_a_separable_rule() -> None:
    model = OnlineLogistic(n_dense=2, buckets=16, learning_rate=0.5, l2=0.0)
    rng = random.Random(0)
    for _ in range(2_000):
        x = rng.random()
        model.update([1.0, x], [], int(x > 0.5))
    assert model.score([1.0, 0.9], []) > 0.8
    assert model.score([1.0, 0.1], []) < 0.2
    model.update([1.0, 0.5], [7], 1)
    assert set(model.hashed) == {7}


def test_client_hints_override_or_feed_the_model() -> None:
    override = BitPredictor(LearnedConfig(kind="discard", k=4))
    assert [override.bit(f"k{i}", hint=i % 2) for i in range(20)] == [i % 2 for i in range(20)]
    # As a feature, the model learns what the hint means: hinted pages never come back.
    feature = BitPredictor(LearnedConfig(kind="discard", k=4, hint_mode="feature", block=8))
    rng = random.Random(1)
    for i in range(6_000):
        if rng.random() < 0.3:
            feature.bit(f"gone{i}", hint=1)
        else:
            feature.bit(f"hot{rng.randrange(3)}", hint=0)
    t = feature.t
    hinted, unhinted = feature.peek("new", hint=1), feature.peek("new", hint=0)
    assert hinted > 0.9 and unhinted < hinted
    assert feature.t == t and feature.peek("new", hint=1) == hinted  # peeking records nothing


LEARNED = {"brightkite": 27_137, "citibike": 130_084}


@pytest.mark.parametrize("folder", ["brightkite", "citibike"])
def test_learned_bits_beat_lru_with_the_robust_one_bit_policy(folder: str) -> None:
    ev = evaluate(traces(folder), K[folder], ["lru", "robust-mark0"], BitSpec("learned"))
    assert ev.results["lru"] == LRU[folder]
    assert ev.results["robust-mark0"] == LEARNED[folder]
    saved = 1 - ev.results["robust-mark0"] / LRU[folder]
    # 5.8% fewer misses on brightkite, 10.0% on citibike (target there: >= 5%).
    assert saved >= (0.05 if folder == "citibike" else 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["brightkite", "citibike"])
def test_learned_phase_bits_beat_lru_with_robust_mark_predict(folder: str) -> None:
    ev = evaluate(traces(folder), K[folder], ["robust-mark-predict"], BitSpec("learned"))
    assert ev.results["robust-mark-predict"] == {"brightkite": 28_418, "citibike": 141_109}[folder]
    assert ev.results["robust-mark-predict"] < LRU[folder]
