"""Learning-augmented paging: policies, one-bit predictors and a trace simulator.

Pure: imports nothing of ``memos``, gRPC, Redis or models (numpy at most; in fact none).

    from scheduler import make_policy, BitPredictor, LearnedConfig

    cache = make_policy("robust-mark0", budget_bytes)       # sized, pinnable
    bits = BitPredictor(LearnedConfig(kind="discard", k=approx_items, budget=budget_bytes))
    out = cache.request(key, size, cost, bits.bit(key, size=size, cost=cost, hint=hint))
    # out.hit, out.evicted (demote or drop those), out.admitted
"""

from scheduler.policy import HIT, MISS, Key, Outcome, Policy
from scheduler.predict.learned import BitPredictor, LearnedConfig
from scheduler.registry import POLICY_NAMES, make_opt, make_policy
from scheduler.sim import SimResult, simulate

__all__ = [
    "HIT",
    "MISS",
    "POLICY_NAMES",
    "BitPredictor",
    "Key",
    "LearnedConfig",
    "Outcome",
    "Policy",
    "SimResult",
    "make_opt",
    "make_policy",
    "simulate",
]
