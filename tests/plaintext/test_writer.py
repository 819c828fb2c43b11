"""The group-commit batcher: grouping, failure isolation, draining on close."""

from __future__ import annotations

import threading
import time

import pytest

from memos.errors import Unavailable
from memos.tiers.plaintext.writer import Batcher, Pending


def test_queued_items_are_handled_in_batches_in_order() -> None:
    batches: list[list[int]] = []
    gate = threading.Event()

    def handle(batch: list[Pending[int, int]]) -> None:
        gate.wait()
        batches.append([p.item for p in batch])
        for p in batch:
            p.resolve(p.item * 10)

    batcher: Batcher[int, int] = Batcher("test", handle, max_rows=4, max_wait_s=0.0)
    pending = [batcher.submit(i) for i in range(10)]
    gate.set()
    assert [p.future.result(timeout=10) for p in pending] == [i * 10 for i in range(10)]
    batcher.close()
    assert [x for b in batches for x in b] == list(range(10))
    assert all(len(b) <= 4 for b in batches) and len(batches) < 10


def test_several_workers_handle_batches_side_by_side() -> None:
    # Each batch waits for another one to be in hand at the same time: one worker would hang.
    both = threading.Barrier(2, timeout=10)
    workers: set[str] = set()

    def handle(batch: list[Pending[int, int]]) -> None:
        workers.add(threading.current_thread().name)
        both.wait()
        for p in batch:
            p.resolve(p.item)

    batcher: Batcher[int, int] = Batcher("test", handle, max_rows=1, max_wait_s=0.0, workers=2)
    pending = [batcher.submit(i) for i in range(6)]
    assert sorted(p.future.result(timeout=10) for p in pending) == list(range(6))
    batcher.close(timeout=10)
    assert len(workers) == 2 and not any(t.is_alive() for t in batcher._threads)


def test_rows_bound_the_batch_but_a_big_item_goes_alone() -> None:
    sizes: list[int] = []

    def handle(batch: list[Pending[str, None]]) -> None:
        sizes.append(sum(p.rows for p in batch))
        for p in batch:
            p.resolve(None)

    gate = threading.Lock()
    with gate:
        batcher: Batcher[str, None] = Batcher("test", handle, max_rows=5, max_wait_s=0.05)
        items = [batcher.submit("a", rows=3), batcher.submit("b", rows=9), batcher.submit("c", 2)]
    for p in items:
        p.future.result(timeout=10)
    batcher.close()
    assert max(sizes) == 9 and sum(sizes) == 14


def test_a_failing_batch_fails_exactly_its_calls() -> None:
    def handle(batch: list[Pending[int, int]]) -> None:
        if any(p.item < 0 for p in batch):
            raise RuntimeError("commit failed")
        for p in batch:
            p.resolve(p.item)

    batcher: Batcher[int, int] = Batcher("test", handle, max_rows=100, max_wait_s=0.05)
    bad = [batcher.submit(-1), batcher.submit(2)]  # queued together: one batch
    for p in bad:
        with pytest.raises(RuntimeError, match="commit failed"):
            p.future.result(timeout=10)
    good = batcher.submit(3)
    assert good.future.result(timeout=10) == 3
    batcher.close()


def test_close_drains_the_queue_and_refuses_new_items() -> None:
    done: list[int] = []

    def handle(batch: list[Pending[int, None]]) -> None:
        time.sleep(0.01)
        for p in batch:
            done.append(p.item)
            p.resolve(None)

    batcher: Batcher[int, None] = Batcher("test", handle, max_rows=2, max_wait_s=0.0)
    pending = [batcher.submit(i) for i in range(7)]
    batcher.close()
    assert all(p.future.done() for p in pending) and done == list(range(7))
    with pytest.raises(Unavailable):
        batcher.submit(99)


# ------------------------------------------------------------------ recent ids


def ulid(ms: int, rand: int = 12345) -> str:
    """A ULID made at ``ms`` (``memos.ids.new_id`` never goes back in time within a process)."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    value = (ms << 80) | rand
    return "".join(alphabet[(value >> (5 * i)) & 31] for i in range(25, -1, -1))


def test_id_ms_reads_the_ulid_timestamp() -> None:
    from memos.ids import id_time_ms, is_valid_id
    from memos.tiers.plaintext.writer import id_ms

    for ms in (0, 1, 1_700_000_000_123, (1 << 48) - 1):
        made = ulid(ms)
        assert is_valid_id(made) and id_ms(made) == ms == id_time_ms(made)
    assert id_ms("not-a-ulid") is None and id_ms("U" * 26) is None


def test_recent_ids_vouch_only_for_ids_made_after_opening_and_lately() -> None:
    from memos.tiers.plaintext.writer import RecentIds

    opened = 1_700_000_000_000
    recent = RecentIds(window_s=60.0, now_ms=opened)
    before = ("acme", ulid(opened - 5))  # may have been committed by an earlier process
    fresh = ("acme", ulid(opened + 10))
    other = ("acme", ulid(opened + 20))
    now = opened + 1_000
    assert not recent.vouches(before, now) and not recent.vouches(("acme", "x" * 26), now)
    assert recent.vouches(fresh, now) and recent.vouches(other, now)
    recent.add([fresh, before], now)
    assert fresh in recent and before not in recent and other not in recent
    assert len(recent) == 1
    # Past the window an id is no longer vouched for, and its key is forgotten.
    later = opened + 10 + 60_001
    assert not recent.vouches(fresh, later)
    recent.add([], later)
    assert fresh not in recent and len(recent) == 0


def test_recent_ids_forget_deleted_keys() -> None:
    from memos.tiers.plaintext.writer import RecentIds

    recent = RecentIds(window_s=60.0, now_ms=1_000)
    keys = [("acme", ulid(2_000)), ("globex", ulid(2_001, rand=7))]
    recent.add(keys, 2_500)
    recent.discard(keys[:1])
    assert keys[0] not in recent and keys[1] in recent
    assert recent.vouches(keys[0], 2_600)  # put again, it is known to be absent
