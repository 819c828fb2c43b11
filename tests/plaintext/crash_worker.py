"""A process that writes to a PlaintextStore and prints each write once it is acknowledged.

``python -m tests.plaintext.crash_worker DIR`` puts five cubes and prints ``ready ID`` for each,
then runs two threads putting text-only cubes (``put ID`` once acknowledged) and three threads
updating the five cubes (tags every time, the text every third version, so that some updates
re-embed), printing ``update ID VERSION``. It never stops by itself: the test kills it.
"""

from __future__ import annotations

import random
import sys
import threading

from memos.config import EmbedSettings, PlaintextSettings
from memos.cube import MemCube, PlaintextPayload, utcnow
from memos.embed import load_embedder
from memos.ids import new_id
from memos.tiers.plaintext import PlaintextStore

_print_lock = threading.Lock()


def say(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def cube(text: str) -> MemCube:
    now = utcnow()
    return MemCube(
        id=new_id(),
        tenant="acme",
        created_at=now,
        updated_at=now,
        plaintext=PlaintextPayload(text=text),
    )


def next_version(latest: MemCube) -> MemCube:
    v = latest.version + 1
    updates: dict[str, object] = {"version": v, "updated_at": utcnow(), "tags": (f"v{v}",)}
    if v % 3 == 0:
        updates["plaintext"] = PlaintextPayload(text=f"cube text at version {v}")
    return latest.model_copy(update=updates)


def main(path: str) -> None:
    store = PlaintextStore(
        path, embedder=load_embedder(EmbedSettings()), settings=PlaintextSettings()
    )
    ids = [c.id for c in store.put([cube(f"cube {i}") for i in range(5)])]
    for cube_id in ids:
        say(f"ready {cube_id}")

    def putter(worker: int) -> None:
        n = 0
        while True:
            batch = [cube(f"worker {worker} memory {n + i}") for i in range(1 + n % 3)]
            n += len(batch)
            for stored in store.put(batch):
                say(f"put {stored.id}")

    def updater(worker: int) -> None:
        rng = random.Random(worker)
        while True:
            new = store.update("acme", rng.choice(ids), next_version)
            say(f"update {new.id} {new.version}")

    threads = [threading.Thread(target=putter, args=(w,), daemon=True) for w in range(2)]
    threads += [threading.Thread(target=updater, args=(w,), daemon=True) for w in range(3)]
    for t in threads:
        t.start()
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1])
