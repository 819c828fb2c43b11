"""A stand-in daemon process for the two-process test: its own RAM and disk, a shared Redis.

Run as ``python -m tests.activation._daemon_worker MODEL_DIR DISK_DIR REDIS_URL``; it answers
one JSON line per JSON command line on stdin: ``save`` (prefill a text and store its chunks),
``check`` (restore a text from the store and compare logits with a full recompute), ``quit``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch

from memos.engines.hf import HFEngine
from memos.tiers.activation.levels import DiskLevel, RamLevel, RedisLevel
from memos.tiers.activation.store import ActivationStore

CHUNK_TOKENS = 16


def main() -> None:
    model_dir, disk_dir, redis_url = sys.argv[1:4]
    engine = HFEngine.load(model_dir, chunk_tokens=CHUNK_TOKENS)
    store = ActivationStore(
        [
            RamLevel(64 << 20),
            DiskLevel(disk_dir, 64 << 20),
            RedisLevel(redis_url, retry_after_s=0.2, connect_timeout_s=0.2),
        ]
    )
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        reply: dict[str, Any]
        if command["op"] == "quit":
            break
        tokens = engine.tokenize(command["text"])
        if command["op"] == "save":
            saved = engine.save(store, tokens)
            reply = {"chunks": len(saved.keys), "written": saved.written}
        else:
            before = {s.name: s.hits for s in store.stats().levels}
            restored = engine.restore(store, tokens)
            step = engine.feed(tokens, restored.cache)
            full = engine.prefill(tokens)
            after = {s.name: s.hits for s in store.stats().levels}
            reply = {
                "chunks": restored.chunks,
                "allclose": bool(torch.allclose(step.logits, full.logits, atol=1e-5, rtol=0)),
                "hits": {name: after[name] - before[name] for name in after},
            }
        print(json.dumps(reply), flush=True)
    store.close()


if __name__ == "__main__":
    main()
