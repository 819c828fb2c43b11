"""The registry under pin leases and shared-directory holds: every entry ends exactly once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from memos.tiers.activation.expiring import Expiring


@dataclass
class Entry:
    tenant: str
    expires_at: float
    items: list[str] = field(default_factory=list)


def test_each_entry_ends_once_by_release_expiry_or_close() -> None:
    now = [0.0]
    ended: list[Entry] = []
    reg: Expiring[Entry] = Expiring(ended.append, capacity=3, clock=lambda: now[0])
    a, b, c = Entry("acme", 10.0), Entry("acme", 5.0), Entry("globex", 20.0)
    assert reg.add("a", a) and reg.add("b", b) and reg.add("c", c)
    assert not reg.add("d", Entry("acme", 1.0)), "full"
    assert not reg.add("a", Entry("acme", 1.0)), "an id is taken once"
    assert reg.full()

    assert not reg.release("globex", "a"), "another tenant's"
    assert reg.release("acme", "a") and ended == [a]
    assert not reg.release("acme", "a"), "already over"

    now[0] = 6.0
    assert reg.sweep() == 1 and ended == [a, b]
    assert reg.live() == [c]
    reg.close()
    assert ended == [a, b, c] and reg.live() == []
    now[0] = 100.0
    assert reg.sweep() == 0 and ended == [a, b, c]


def test_change_applies_to_the_tenants_entry_or_makes_one_when_there_is_room() -> None:
    ended: list[Entry] = []
    reg: Expiring[Entry] = Expiring(ended.append, capacity=1, clock=lambda: 0.0)

    def add(item: str) -> Callable[[Entry], None]:
        return lambda e: e.items.append(item)

    assert reg.admits("acme", "h")
    assert reg.change("acme", "h", lambda: Entry("acme", 9.0), add("x"))
    assert reg.change("acme", "h", lambda: Entry("acme", 9.0), add("y"))
    assert not reg.admits("globex", "h") and not reg.admits("acme", "other")
    assert not reg.change("globex", "h", lambda: Entry("globex", 9.0), add("z"))
    assert not reg.change("acme", "other", lambda: Entry("acme", 9.0), add("z")), "no room"
    [entry] = reg.live()
    assert entry.items == ["x", "y"]
    reg.close()
    assert ended == [entry]
