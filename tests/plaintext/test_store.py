"""PlaintextStore against real LanceDB and the real MiniLM model."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import pytest

from memos.cube import (
    AccessStats,
    ActivationPayload,
    Kind,
    MemCube,
    PlaintextPayload,
    Source,
    State,
    utcnow,
)
from memos.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from memos.ids import new_id
from memos.tiers.plaintext import CubeFilter, PlaintextStore
from tests.plaintext.conftest import OpenStore
from tests.plaintext.helpers import DIM, bump, cube, new_text, unit_vectors

ALL_STATES = (State.ACTIVE, State.ARCHIVED, State.TOMBSTONE)


def ids(cubes: list[MemCube]) -> list[str]:
    return [c.id for c in cubes]


def search_ids(
    store: PlaintextStore, tenant: str, query: str, flt: CubeFilter, k: int = 10
) -> list[str]:
    hits = store.search(tenant, store.embed_query(query), k, flt)
    return [c.id for c, _ in hits]


# ------------------------------------------------------------------ put / get


def test_put_fills_embedding_model_and_size_and_get_round_trips(store: PlaintextStore) -> None:
    now = utcnow()
    original = MemCube(
        id=new_id(),
        tenant="acme",
        namespace="chat:alice",
        parent_ids=(new_id(),),
        source=Source(writer="agent-7", session_id="s1", message_id="m9"),
        tags=("work", "o'clock", "50%"),
        created_at=now,
        updated_at=now,
        expires_at=now + timedelta(days=3),
        pinned=True,
        priority=-4,
        access=AccessStats(count=3, last_access=now, decayed_frequency=0.25),
        metadata={"a=b": "c", "a": "b=c", "quote": "it's \\ here"},
        plaintext=PlaintextPayload(text="Alice prefers window seats on long flights."),
    )
    [stored] = store.put([original])
    assert stored.plaintext is not None and stored.plaintext.embedding is not None
    vector = np.asarray(stored.plaintext.embedding)
    assert vector.shape == (DIM,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert stored.plaintext.embedding_model == "all-MiniLM-L6-v2"
    assert stored.size_bytes >= len(original.text) + DIM * 4

    got = store.get("acme", original.id)
    assert got == stored


def test_provided_embedding_is_kept_and_wrong_ones_are_refused(store: PlaintextStore) -> None:
    vector = unit_vectors(1)[0] * 3.0  # not normalised: stored as given
    [stored] = store.put([cube("client vector", embedding=vector)])
    got = store.get("acme", stored.id)
    assert got is not None and got.plaintext is not None
    assert got.plaintext.embedding == tuple(float(x) for x in vector.astype(np.float32))
    # cosine similarity ignores the length
    [(hit, score)] = store.search("acme", vector, 1, CubeFilter())
    assert hit.id == stored.id and score == pytest.approx(1.0, abs=1e-4)

    for bad in (np.ones(DIM - 1), np.zeros(DIM), np.full(DIM, np.nan)):
        with pytest.raises(InvalidArgument):
            store.put([cube("bad vector", embedding=bad)])
    with pytest.raises(InvalidArgument, match="dimensions"):
        store.search("acme", np.ones(12), 3, CubeFilter())


def test_put_of_an_existing_id_fails_only_that_call(store: PlaintextStore) -> None:
    [first] = store.put([cube("the original", embedding=unit_vectors(1, 1)[0])])
    clone = first.model_copy(update={"plaintext": PlaintextPayload(text="an impostor")})
    with pytest.raises(AlreadyExists):
        store.put([clone])
    twice = cube("twice in one call", embedding=unit_vectors(1, 2)[0])
    with pytest.raises(AlreadyExists):
        store.put([twice, twice])
    other = store.put([cube("unrelated", embedding=unit_vectors(1, 3)[0])])
    assert store.get("acme", other[0].id) is not None
    assert [c.text for c in store.history("acme", first.id)] == ["the original"]
    assert store.get("acme", twice.id) is None


def test_non_plaintext_cube_records_are_stored_without_a_vector(store: PlaintextStore) -> None:
    now = utcnow()
    record = MemCube(
        id=new_id(),
        tenant="acme",
        kind=Kind.ACTIVATION,
        created_at=now,
        updated_at=now,
        activation=ActivationPayload(
            model_fingerprint="fp", token_count=512, chunk_tokens=256, chunk_keys=("k1", "k2")
        ),
    )
    store.put([record, cube("a plaintext neighbour")])
    got = store.get("acme", record.id)
    assert got is not None and got.activation == record.activation
    listed, _ = store.list("acme", CubeFilter(kind=Kind.ACTIVATION), page_size=10, page_token=None)
    assert ids(listed) == [record.id]
    hits = store.search("acme", store.embed_query("anything"), 10, CubeFilter())
    assert record.id not in [c.id for c, _ in hits]


# ------------------------------------------------------------------ group commit


def test_concurrent_puts_share_commits_and_one_embedding_call(
    open_store: OpenStore, minilm: object
) -> None:
    class CountingEmbedder:
        """The real model, counting its batch calls."""

        def __init__(self, inner: object) -> None:
            self.inner = inner
            self.model_name = inner.model_name  # type: ignore[attr-defined]
            self.dim = inner.dim  # type: ignore[attr-defined]
            self.calls: list[int] = []

        def embed(self, texts: list[str]) -> np.ndarray:
            self.calls.append(len(texts))
            return self.inner.embed(texts)  # type: ignore[attr-defined,no-any-return]

    store = open_store(group_commit_max_wait_ms=200)
    counting = CountingEmbedder(minilm)
    store._embedder = counting  # type: ignore[assignment]
    n = 24
    start = threading.Barrier(n)
    results: list[list[MemCube]] = [[] for _ in range(n)]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        start.wait()
        try:
            results[i] = store.put([cube(f"memory number {i} about topic {i % 5}")])
        except BaseException as exc:
            errors.append(exc)

    before = store.table_version
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    commits = store.table_version - before
    assert 1 <= commits < n / 2, commits
    assert sum(counting.calls) == n and len(counting.calls) < n / 2, counting.calls
    for [stored] in results:
        got = store.get("acme", stored.id)
        assert got is not None and got.text == stored.text


# ------------------------------------------------------------------ search quality

PAIRS = [
    ("My daughter Emma was born on the 3rd of March 2015.", "When is Emma's birthday?"),
    ("I am allergic to peanuts and shellfish.", "What foods should I avoid eating?"),
    ("Our team's standup meeting happens every weekday at 9:30.", "What time is the daily sync?"),
    ("I drive a blue 2018 Toyota Corolla.", "What kind of car do I own?"),
    ("The wifi password at the cabin is 'pinecone42'.", "How do I get online at the cabin?"),
    (
        "My favourite band is Radiohead; OK Computer is the best album.",
        "Which music group do I like most?",
    ),
    ("I moved from Lisbon to Berlin in 2021 for a new job.", "Which city did I relocate to?"),
    ("My landlord is called Mr. Okafor and he lives upstairs.", "Who owns the apartment I rent?"),
    (
        "I'm training for a marathon in October; I run 50 km a week.",
        "What race am I preparing for?",
    ),
    ("The dentist appointment was moved to next Tuesday at 2pm.", "When do I see the dentist?"),
    ("I prefer tea over coffee, especially green tea in the morning.", "What hot drink do I like?"),
    ("Our cat Miso only eats salmon-flavoured food.", "What does the cat eat?"),
]


def test_paraphrased_queries_find_their_memory_first(store: PlaintextStore) -> None:
    stored = store.put([cube(memory) for memory, _ in PAIRS])
    for (_, query), expected in zip(PAIRS, stored, strict=True):
        hits = store.search("acme", store.embed_query(query), 3, CubeFilter())
        assert hits[0][0].id == expected.id, (query, [c.text for c, _ in hits])
        assert hits[0][1] > hits[1][1]
        assert -1.0 <= hits[-1][1] <= hits[0][1] <= 1.0


# ------------------------------------------------------------------ versions


def test_update_makes_version_two_and_keeps_history(store: PlaintextStore) -> None:
    [v1] = store.put([cube("The office closes at 6pm.")])
    v2 = store.update("acme", v1.id, new_text("The office closes at 7pm."))
    assert v2.version == 2 and v2.text == "The office closes at 7pm."
    assert v2.plaintext is not None and v1.plaintext is not None
    assert v2.plaintext.embedding is not None
    assert v2.plaintext.embedding != v1.plaintext.embedding  # re-embedded
    assert [(c.version, c.text) for c in store.history("acme", v1.id)] == [
        (1, "The office closes at 6pm."),
        (2, "The office closes at 7pm."),
    ]
    old = store.get("acme", v1.id, version=1)
    assert old is not None and old.text == "The office closes at 6pm."
    assert store.get("acme", v1.id) == v2
    # only the latest version is searchable, and it appears once
    hits = store.search("acme", store.embed_query("office closing time"), 10, CubeFilter())
    assert [(c.id, c.version) for c, _ in hits] == [(v1.id, 2)]
    listed, _ = store.list("acme", CubeFilter(), page_size=10, page_token=None)
    assert [(c.id, c.version) for c in listed] == [(v1.id, 2)]


def test_update_of_tags_keeps_the_embedding(store: PlaintextStore) -> None:
    [v1] = store.put([cube("Keep my vector")])
    v2 = store.update("acme", v1.id, bump({"tags": ("x",)}))
    assert v2.plaintext is not None and v1.plaintext is not None
    assert v2.plaintext.embedding == v1.plaintext.embedding and v2.tags == ("x",)


def test_update_errors(store: PlaintextStore) -> None:
    [v1] = store.put([cube("versioned")])
    with pytest.raises(NotFound):
        store.update("acme", new_id(), bump({}))
    with pytest.raises(NotFound):  # another tenant's id is not found
        store.update("globex", v1.id, bump({}))
    with pytest.raises(FailedPrecondition, match="version 1"):
        store.update("acme", v1.id, bump({}), expected_version=5)
    assert store.update("acme", v1.id, bump({}), expected_version=1).version == 2

    def refuse(latest: MemCube) -> MemCube:
        raise NotFound("the kernel says no")

    with pytest.raises(NotFound, match="the kernel says no"):
        store.update("acme", v1.id, refuse)
    with pytest.raises(ValueError, match="version 3"):
        store.update("acme", v1.id, lambda c: c.model_copy(update={"tags": ("same version",)}))
    before = store.table_version
    unchanged = store.update("acme", v1.id, lambda c: c)  # "nothing to change"
    assert unchanged.version == 2 and store.table_version == before
    assert [c.version for c in store.history("acme", v1.id)] == [1, 2]


def test_concurrent_updates_of_one_id_lose_nothing(store: PlaintextStore) -> None:
    [v1] = store.put([cube("counter")])
    n = 16
    start = threading.Barrier(n)

    def add_tag(i: int) -> None:
        start.wait()

        def change(latest: MemCube) -> MemCube:
            return latest.model_copy(
                update={"version": latest.version + 1, "tags": (*latest.tags, f"t{i}")}
            )

        store.update("acme", v1.id, change)

    threads = [threading.Thread(target=add_tag, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latest = store.get("acme", v1.id)
    assert latest is not None and latest.version == n + 1
    assert sorted(latest.tags) == sorted(f"t{i}" for i in range(n))
    assert [c.version for c in store.history("acme", v1.id)] == list(range(1, n + 2))
    assert store.stats("acme").cubes == 1


def test_tombstone_hides_from_search_and_list(store: PlaintextStore) -> None:
    keep, gone = store.put([cube("Paris is the capital of France."), cube("Rome is in Italy.")])
    store.update("acme", gone.id, bump({"state": State.TOMBSTONE}))
    query = store.embed_query("European capitals")
    assert [c.id for c, _ in store.search("acme", query, 10, CubeFilter())] == [keep.id]
    listed, _ = store.list("acme", CubeFilter(), page_size=10, page_token=None)
    assert ids(listed) == [keep.id]
    tomb = CubeFilter(states=(State.TOMBSTONE,))
    assert [c.id for c, _ in store.search("acme", query, 10, tomb)] == [gone.id]
    tombstone = store.get("acme", gone.id)
    assert tombstone is not None and tombstone.state == State.TOMBSTONE


def test_expired_cubes_are_never_returned(store: PlaintextStore) -> None:
    past = utcnow() - timedelta(hours=2)
    expired = cube(
        "The parking permit is valid until noon.", created_at=past, ttl=timedelta(hours=1)
    )
    fresh = cube("The parking permit renews every month.", ttl=timedelta(hours=1))
    store.put([expired, fresh])
    query = store.embed_query("parking permit")
    every = CubeFilter(states=ALL_STATES, include_expired=True)
    assert [c.id for c, _ in store.search("acme", query, 10, every)] == [fresh.id]
    assert [c.id for c, _ in store.search("acme", query, 10, CubeFilter(), exact=True)] == [
        fresh.id
    ]
    listed, _ = store.list("acme", CubeFilter(), page_size=10, page_token=None)
    assert ids(listed) == [fresh.id]
    listed, _ = store.list("acme", every, page_size=10, page_token=None)
    assert sorted(ids(listed)) == sorted([expired.id, fresh.id])
    got = store.get("acme", expired.id)  # the kernel decides what a caller may see
    assert got is not None and got.is_expired()
    assert store.sweep() == 1
    assert store.get("acme", expired.id) is None and store.get("acme", fresh.id) is not None


# ------------------------------------------------------------------ filters and tenants


def test_filters(store: PlaintextStore) -> None:
    t0 = utcnow() - timedelta(days=10)
    a = cube(
        "alpha", namespace="notes", tags=("red", "blue"), metadata={"speaker": "Ann"}, created_at=t0
    )
    b = cube(
        "beta",
        namespace="notes",
        tags=("red",),
        metadata={"speaker": "Bob's \\ 100%"},
        created_at=t0 + timedelta(days=2),
    )
    c = cube(
        "gamma",
        namespace="chat",
        tags=("blue",),
        metadata={"speaker": "Ann", "x": "1"},
        created_at=t0 + timedelta(days=4),
    )
    d = cube("delta", namespace="chat", created_at=t0 + timedelta(days=6))
    store.put([a, b, c, d])
    store.update("acme", d.id, bump({"state": State.ARCHIVED}))

    def both(flt: CubeFilter) -> list[str]:
        listed, _ = store.list("acme", flt, page_size=100, page_token=None)
        found = search_ids(store, "acme", "greek letters", flt)
        exact = [
            x.id for x, _ in store.search("acme", store.embed_query("greek"), 10, flt, exact=True)
        ]
        assert sorted(found) == sorted(ids(listed)) == sorted(exact)
        return sorted(ids(listed))

    def expect(*cubes: MemCube) -> list[str]:
        return sorted(x.id for x in cubes)

    assert both(CubeFilter()) == expect(a, b, c)
    assert both(CubeFilter(namespaces=("notes",))) == expect(a, b)
    assert both(CubeFilter(namespaces=("notes", "chat"))) == expect(a, b, c)
    assert both(CubeFilter(tags=("red",))) == expect(a, b)
    assert both(CubeFilter(tags=("red", "blue"))) == expect(a)
    assert both(CubeFilter(kind=Kind.PLAINTEXT)) == expect(a, b, c)
    assert both(CubeFilter(states=(State.ARCHIVED,))) == expect(d)
    assert both(CubeFilter(states=(State.ACTIVE, State.ARCHIVED))) == expect(a, b, c, d)
    assert both(CubeFilter(created_after=t0 + timedelta(days=2))) == expect(b, c)
    assert both(CubeFilter(created_before=t0 + timedelta(days=2))) == expect(a)
    assert both(CubeFilter(metadata={"speaker": "Ann"})) == expect(a, c)
    assert both(CubeFilter(metadata={"speaker": "Ann", "x": "1"})) == expect(c)
    assert both(CubeFilter(metadata={"speaker": "Bob's \\ 100%"})) == expect(b)
    assert both(CubeFilter(metadata={"speaker": "Bob"})) == []
    assert both(CubeFilter(tags=("red') OR (1=1",))) == []


def test_tenants_are_isolated(store: PlaintextStore) -> None:
    [mine] = store.put([cube("acme's secret launch date is May 5th", tenant="acme")])
    [theirs] = store.put([cube("globex's secret launch date is June 9th", tenant="globex")])
    query = store.embed_query("secret launch date")
    for exact in (False, True):
        hits = store.search("globex", query, 10, CubeFilter(states=ALL_STATES), exact=exact)
        assert [c.id for c, _ in hits] == [theirs.id]
    listed, _ = store.list("globex", CubeFilter(states=ALL_STATES), page_size=100, page_token=None)
    assert ids(listed) == [theirs.id]
    assert store.get("globex", mine.id) is None
    assert store.history("globex", mine.id) == []
    assert store.stats("globex").cubes == 1 and store.stats(None).cubes == 2
    with pytest.raises(InvalidArgument):
        store.get("acme' OR '1'='1", mine.id)


def test_list_pages_in_id_order(store: PlaintextStore) -> None:
    stored = store.put([cube(f"note {i}", embedding=v) for i, v in enumerate(unit_vectors(25))])
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page, token = store.list("acme", CubeFilter(), page_size=10, page_token=token)
        seen.extend(ids(page))
        pages += 1
        if token is None:
            break
    assert pages == 3 and seen == sorted(ids(stored))
    for bad in ("garbage!", "cDE6bm90LWFuLWlk", "", "x" * 40):
        if bad:
            with pytest.raises(InvalidArgument, match="page_token"):
                store.list("acme", CubeFilter(), page_size=10, page_token=bad)


def test_stats(store: PlaintextStore) -> None:
    a, b, _ = store.put(
        [cube("one", namespace="n1"), cube("two", namespace="n1"), cube("three", namespace="n2")]
    )
    store.update("acme", a.id, bump({"state": State.ARCHIVED}))
    store.update("acme", b.id, bump({"state": State.TOMBSTONE}))
    stats = store.stats("acme")
    assert stats.cubes == 3 and stats.versions == 5
    assert stats.by_state == {"active": 1, "archived": 1, "tombstone": 1}
    assert stats.by_kind == {"plaintext": 3}
    assert stats.by_namespace == {"n1": 2, "n2": 1}
    assert stats.embedding_model == "all-MiniLM-L6-v2" and stats.embedding_dim == DIM
    assert stats.size_bytes > 5 * DIM * 4 and stats.disk_bytes > 0
    assert not stats.ann_index and stats.unindexed_rows == 5


def test_purge_removes_every_version(store: PlaintextStore) -> None:
    a, b = store.put([cube("purge me"), cube("keep me")])
    store.update("acme", a.id, new_text("purge me too"))
    assert store.purge("acme", a.id) == 2
    assert store.get("acme", a.id) is None and store.history("acme", a.id) == []
    assert store.get("acme", b.id) is not None
    assert store.stats("acme").cubes == 1


# ------------------------------------------------------------------ ANN index


def test_ann_index_builds_refreshes_and_agrees_with_exact_search(open_store: OpenStore) -> None:
    store = open_store(ann_min_rows=256)
    vectors = unit_vectors(1200, seed=7)
    first = store.put(
        [
            cube(f"v{i}", tenant="acme" if i % 4 else "globex", embedding=v)
            for i, v in enumerate(vectors[:800])
        ]
    )
    assert store.refresh_index() is True
    stats = store.stats(None)
    assert stats.ann_index and stats.unindexed_rows == 0
    assert store.refresh_index() is False

    late = store.put([cube(f"late {i}", embedding=v) for i, v in enumerate(vectors[800:])])
    assert store.stats(None).unindexed_rows == 400
    # a cube written after the index was built is found at once
    for c in (late[0], late[-1], first[1]):
        assert c.plaintext is not None and c.plaintext.embedding is not None
        [(hit, score)] = store.search("acme", np.asarray(c.plaintext.embedding), 1, CubeFilter())
        assert hit.id == c.id and score == pytest.approx(1.0, abs=1e-3)

    rng = np.random.default_rng(1)
    queries = rng.normal(size=(20, DIM)).astype(np.float32)
    flts = [CubeFilter(), CubeFilter(tags=()), CubeFilter(namespaces=("default",))]
    for flt in flts:
        for q in queries:
            approx = [c.id for c, _ in store.search("acme", q, 10, flt)]
            exact = [c.id for c, _ in store.search("acme", q, 10, flt, exact=True)]
            assert len(approx) == 10 and len(set(approx) & set(exact)) >= 7
    globex = [c for c in first if c.tenant == "globex"]
    hits = store.search("globex", queries[0], 10, CubeFilter())
    assert {c.tenant for c, _ in hits} == {"globex"} and len(hits) == 10
    assert len(globex) == 200

    assert store.refresh_index() is True  # 400 new rows > 25% of 800: rebuilt
    assert store.stats(None).unindexed_rows == 0
    store.compact()
    assert len(store.history("acme", late[0].id)) == 1


def test_the_index_job_compacts_a_table_written_in_many_small_commits(
    open_store: OpenStore,
) -> None:
    """Below ``ann_min_rows`` there is no index to refresh, but the job still merges the
    small files once ``compact_after_commits`` commits landed; with an index, too."""
    store = open_store(compact_after_commits=6, ann_min_rows=256)

    def files() -> int:
        return int(store._table.stats()["fragment_stats"]["num_fragments"])

    vectors = unit_vectors(300, seed=11)
    singles = [store.put([cube(f"one {i}", embedding=v)])[0] for i, v in enumerate(vectors[:5])]
    assert files() == 5
    assert store.refresh_index() is False and files() == 5, "5 commits: not yet"
    singles += store.put([cube("one 5", embedding=vectors[5])])
    assert store.refresh_index() is False, "no index below ann_min_rows"
    assert files() == 1, "6 commits since the open: compacted"
    for c in singles:
        [(hit, _)] = store.search("acme", np.asarray(c.plaintext.embedding), 1, CubeFilter())
        assert hit.id == c.id

    store.put([cube(f"bulk {i}", embedding=v) for i, v in enumerate(vectors[6:290])])
    assert store.refresh_index() is True and store.stats(None).ann_index
    late = [store.put([cube(f"late {i}", embedding=v)])[0] for i, v in enumerate(vectors[290:])]
    assert store.stats(None).unindexed_rows == 10
    assert store.refresh_index() is True, "10 small commits: merged and folded into the index"
    assert store.stats(None).unindexed_rows == 0
    assert store.refresh_index() is False
    [(hit, _)] = store.search("acme", np.asarray(late[-1].plaintext.embedding), 1, CubeFilter())
    assert hit.id == late[-1].id


# ------------------------------------------------------------------ reopening


def test_reopen_keeps_everything_and_refuses_another_model(
    open_store: OpenStore, tmp_path: object
) -> None:
    store = open_store()
    [a] = store.put([cube("durable")])
    store.update("acme", a.id, new_text("durable, version two"))
    store.close()
    again = open_store()
    assert [c.version for c in again.history("acme", a.id)] == [1, 2]
    assert search_ids(again, "acme", "durable", CubeFilter()) == [a.id]
    again.close()

    class Tiny:
        model_name = "tiny-8d"
        dim = 8

        def embed(self, texts: Sequence[str]) -> np.ndarray:
            return np.full((len(texts), 8), 8**-0.5, dtype=np.float32)

    with pytest.raises(FailedPrecondition, match="384-dimensional"):
        PlaintextStore(str(tmp_path) + "/plaintext", embedder=Tiny(), settings=again._settings)


def test_open_repairs_two_latest_versions(open_store: OpenStore) -> None:
    """A table holding two latest rows for one cube (written by hand here, as a foreign
    writer could) is repaired on open: the highest version stays latest."""
    store = open_store()
    [v1] = store.put([cube("repair me")])
    v2 = v1.model_copy(
        update={
            "version": 2,
            "plaintext": PlaintextPayload(
                text="repair me, v2", embedding=v1.plaintext.embedding if v1.plaintext else None
            ),
        }
    )
    store._table.add(store._rows([v2], [True]))  # bypasses the atomic update on purpose
    assert store._table.count_rows(f"id = '{v1.id}' AND is_latest") == 2
    store.close()
    again = open_store()
    assert again._table.count_rows(f"id = '{v1.id}' AND is_latest") == 1
    latest = again.get("acme", v1.id)
    assert latest is not None and latest.version == 2
    assert [c.version for c in again.history("acme", v1.id)] == [1, 2]
    assert search_ids(again, "acme", "repair", CubeFilter()) == [v1.id]


def test_writes_continue_while_maintenance_rewrites_files(open_store: OpenStore) -> None:
    """Compaction rewrites files that updates would touch: updates wait for it, puts go on,
    and nothing fails."""
    store = open_store(ann_min_rows=256)
    cubes = []
    for start in range(0, 900, 300):
        batch = [cube(f"c{i}", embedding=v) for i, v in enumerate(unit_vectors(300, start))]
        cubes += store.put(batch)
    stop = threading.Event()
    errors: list[BaseException] = []
    done: list[int] = [0, 0]

    def updater(worker: int) -> None:
        rng = np.random.default_rng(worker)
        while not stop.is_set():
            target = cubes[int(rng.integers(0, len(cubes)))]
            try:
                store.update("acme", target.id, bump({"tags": (f"w{worker}",)}))
                done[0] += 1
            except BaseException as exc:
                errors.append(exc)

    def putter() -> None:
        vectors = unit_vectors(500, 99)
        i = 0
        while not stop.is_set():
            try:
                store.put([cube(f"new {i}", embedding=vectors[i % 500])])
                done[1] += 1
            except BaseException as exc:
                errors.append(exc)
            i += 1

    threads = [threading.Thread(target=updater, args=(w,)) for w in range(2)]
    threads.append(threading.Thread(target=putter))
    for t in threads:
        t.start()
    try:
        assert store.refresh_index() is True
        for _ in range(3):
            store.compact()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert done[0] > 0 and done[1] > 0
    latest = store._table.search().where("is_latest").select(["id"]).to_arrow()["id"].to_pylist()
    assert len(latest) == len(set(latest)) == 900 + done[1]
