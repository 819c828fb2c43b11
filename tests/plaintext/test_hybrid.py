"""Lexical (BM25), dense and hybrid search in the plaintext store, over real LanceDB and the
real MiniLM model: exact tokens, filters before ranking, writes seen at once, templates and
re-embedding."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import lancedb
import numpy as np
import pytest
from pydantic import ValidationError

from memos.config import PlaintextSettings
from memos.cube import Kind, MemCube, State, utcnow
from memos.errors import InvalidArgument
from memos.tiers.plaintext import CubeFilter, PlaintextStore
from memos.tiers.plaintext import lexical as lex
from memos.tiers.plaintext.ranking import (
    SEARCH_MODES,
    SearchMode,
    convex_combination,
    reciprocal_rank_fusion,
)
from memos.tiers.plaintext.schema import EMBED_TEXT, SITUATED_TEXT
from tests.fixtures.embedder import shared_minilm
from tests.plaintext.conftest import OpenStore
from tests.plaintext.helpers import bump, cube, new_text

ALL_STATES = (State.ACTIVE, State.ARCHIVED, State.TOMBSTONE)


def stored_vector(text: str) -> np.ndarray:
    """The vector the store keeps for ``text``: its bulk (float32) path, where a query's may run
    in bfloat16."""
    vector: np.ndarray = shared_minilm().embed([text])[0]
    return vector


def find(
    store: PlaintextStore,
    query: str,
    mode: SearchMode,
    *,
    tenant: str = "acme",
    k: int = 10,
    flt: CubeFilter | None = None,
) -> list[MemCube]:
    vector = store.embed_query(query) if mode != "lexical" else None
    hits = store.find(tenant, k, flt or CubeFilter(), mode=mode, text=query, vector=vector)
    return [c for c, _ in hits]


def ids(cubes: list[MemCube]) -> list[str]:
    return [c.id for c in cubes]


# ------------------------------------------------------------------ ranking (pure)


def test_reciprocal_rank_fusion_adds_reciprocal_ranks() -> None:
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["c", "d"]], k=60))
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["d"] == pytest.approx(1 / 62)
    order = [item for item, _ in reciprocal_rank_fusion([["a", "b", "c"], ["c", "d"]], k=60)]
    assert order == ["c", "a", "b", "d"]  # both lists beat one; ties: first seen first
    assert reciprocal_rank_fusion([[], []]) == []
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([["a"]], k=0)


def test_convex_combination_sums_normalised_scores() -> None:
    fused = dict(
        convex_combination([[("a", 0.9), ("b", 0.5), ("c", 0.1)], [("c", 12.0), ("d", 2.0)]])
    )
    assert fused["a"] == pytest.approx(0.5)  # top of the first list, absent from the second
    assert fused["b"] == pytest.approx(0.25)
    assert fused["c"] == pytest.approx(0.5)  # bottom of one, top of the other
    assert fused["d"] == pytest.approx(0.0)
    assert dict(convex_combination([[("x", 3.0), ("y", 3.0)], []])) == {"x": 0.5, "y": 0.5}
    weighted = dict(convex_combination([[("a", 1.0), ("b", 0.0)], [("b", 1.0)]], [0.8, 0.2]))
    assert weighted == {"a": pytest.approx(0.8), "b": pytest.approx(0.2)}
    with pytest.raises(ValueError):
        convex_combination([[("a", 1.0)]], [0.5, 0.5])


def test_convex_fusion_is_selectable(open_store: OpenStore) -> None:
    store = open_store(fusion="convex")
    places = ["bank", "email", "streaming", "office", "gym", "library", "school", "cloud"]
    store.put(
        [cube(f"Remember the password for the {p} account and keep it private.") for p in places]
    )
    [target] = store.put([cube("the vendor contract id is XQ7Z4")])
    hits = store.find(
        "acme", 3, CubeFilter(), mode="hybrid", text="XQ7Z4", vector=store.embed_query("XQ7Z4")
    )
    assert hits[0][0].id == target.id and 0.0 <= hits[-1][1] <= hits[0][1] <= 1.0


# ------------------------------------------------------------------ lexical vs dense


def test_lexical_finds_an_exact_rare_token_that_dense_misses(store: PlaintextStore) -> None:
    places = ["bank", "email", "streaming", "office", "gym", "library", "school", "cloud"]
    places += ["phone", "laptop", "router", "bike lock", "alarm", "shop", "forum", "game"]
    store.put(
        [cube(f"Remember the password for the {p} account and keep it private.") for p in places]
    )
    [target] = store.put(
        [cube("Budget meeting notes: the vendor contract id is XQ7Z4, renewal due in March.")]
    )
    query = "XQ7Z4 password"
    # "password" is in nearly every text (low IDF); the rare id decides the BM25 ranking.
    assert ids(find(store, query, "lexical", k=5))[0] == target.id
    # The embedding follows the meaning of "password": the contract note is not in the top 5.
    assert target.id not in ids(find(store, query, "dense", k=5))
    # Fusion keeps lexical's find in its top 3.
    assert target.id in ids(find(store, query, "hybrid", k=3))


def test_dense_finds_a_paraphrase_that_lexical_misses(store: PlaintextStore) -> None:
    [car, _, _] = store.put(
        [
            cube("My automobile broke down on the highway yesterday."),
            cube("The quarterly budget review is on Thursday."),
            cube("Our cat sleeps on the windowsill all afternoon."),
        ]
    )
    query = "vehicle trouble while driving"
    assert find(store, query, "lexical") == []  # no word in common
    assert ids(find(store, query, "dense"))[0] == car.id
    assert ids(find(store, query, "hybrid"))[0] == car.id


def test_stemming_and_stop_words(store: PlaintextStore) -> None:
    [run] = store.put([cube("She was running marathons every spring.")])
    store.put([cube("The weather was mild.")])
    assert ids(find(store, "runs marathon", "lexical")) == [run.id]
    assert find(store, "the of and was", "lexical") == []


def test_lexical_needs_text_and_dense_needs_a_vector(store: PlaintextStore) -> None:
    store.put([cube("something")])
    with pytest.raises(InvalidArgument):
        store.find("acme", 5, CubeFilter(), mode="lexical", text="  ")
    with pytest.raises(InvalidArgument):
        store.find("acme", 5, CubeFilter(), mode="dense", text="something")
    with pytest.raises(InvalidArgument):
        store.find("acme", 0, CubeFilter(), mode="lexical", text="something")


# ------------------------------------------------------------------ filters before ranking


def test_filters_never_leak_other_tenants_or_namespaces_in_any_mode(
    store: PlaintextStore,
) -> None:
    text = "the launch code for project heron is 4471"
    mine = store.put([cube(text, tenant="acme", namespace="ops", tags=("secret",))])[0]
    # The same text, in places the query must not reach: another tenant, another namespace,
    # an archived and a tombstoned version, an expired cube, another tag set.
    store.put([cube(text, tenant="globex", namespace="ops", tags=("secret",))])
    store.put([cube(text, tenant="acme", namespace="chat", tags=("secret",))])
    store.put([cube(text, tenant="acme", namespace="ops", tags=("public",))])
    [archived, tomb] = store.put([cube(text, namespace="ops", tags=("secret",)) for _ in range(2)])
    store.update("acme", archived.id, bump({"state": State.ARCHIVED}))
    store.update("acme", tomb.id, bump({"state": State.TOMBSTONE}))
    store.put([cube(text, namespace="ops", tags=("secret",), ttl=timedelta(milliseconds=1))])
    flt = CubeFilter(namespaces=("ops",), tags=("secret",), kind=Kind.PLAINTEXT)
    for mode in SEARCH_MODES:
        for exact in (False, True):
            vector = store.embed_query("heron launch code")
            hits = store.find(
                "acme", 10, flt, mode=mode, text="heron launch code", vector=vector, exact=exact
            )
            assert [c.id for c, _ in hits] == [mine.id], mode
        other = find(store, "heron launch code", mode, tenant="globex", flt=flt)
        assert len(other) == 1 and other[0].tenant == "globex"
        archived_only = find(
            store, "heron launch code", mode, flt=CubeFilter(states=(State.ARCHIVED,))
        )
        assert ids(archived_only) == [archived.id]


def test_filters_apply_before_the_top_k_is_cut(store: PlaintextStore) -> None:
    # 60 strong matches elsewhere and one weak match in the filtered namespace: a filter
    # applied after a top-k cut would find nothing; a prefilter finds it at k=1.
    store.put([cube(f"heron heron heron nest number {i}", namespace="birds") for i in range(60)])
    store.put([cube(f"heron heron heron nest number {i}", tenant="globex") for i in range(60)])
    [weak] = store.put([cube("a long note that mentions a heron once", namespace="notes")])
    flt = CubeFilter(namespaces=("notes",))
    for mode in SEARCH_MODES:
        assert ids(find(store, "heron nest", mode, k=1, flt=flt)) == [weak.id], mode


# ------------------------------------------------------------------ writes seen at once


def test_update_and_delete_are_seen_by_both_indexes_at_once(store: PlaintextStore) -> None:
    [zebra, other] = store.put(
        [cube("The zebra escaped from the zoo at noon."), cube("Tea is served at four.")]
    )
    store.compact()  # fold the rows into the full-text index: later writes are unindexed
    stats = store._table.index_stats(lex.FTS_INDEX)
    assert stats is not None and stats.num_indexed_rows == 2 and stats.num_unindexed_rows == 0

    store.update("acme", zebra.id, new_text("The giraffe escaped from the zoo at noon."))
    for mode in SEARCH_MODES:
        hits = find(store, "giraffe", mode, k=1)
        assert ids(hits) == [zebra.id] and hits[0].version == 2, mode
    assert find(store, "zebra", "lexical") == []  # the old version's words are gone

    [fresh] = store.put([cube("A platypus swam in the river.")])
    stats = store._table.index_stats(lex.FTS_INDEX)
    assert stats is not None and stats.num_unindexed_rows > 0  # searched by a flat scan
    for mode in SEARCH_MODES:
        assert ids(find(store, "platypus", mode, k=1)) == [fresh.id], mode

    store.update("acme", zebra.id, bump({"state": State.TOMBSTONE}))
    store.purge("acme", fresh.id)
    for mode in SEARCH_MODES:
        assert zebra.id not in ids(find(store, "giraffe", mode)), mode
        assert fresh.id not in ids(find(store, "platypus", mode)), mode
    assert ids(find(store, "giraffe", "lexical", flt=CubeFilter(states=ALL_STATES))) == [zebra.id]
    assert ids(find(store, "tea", "lexical")) == [other.id]


def test_a_store_reopened_has_its_full_text_index(open_store: OpenStore) -> None:
    store = open_store()
    [c] = store.put([cube("The aardvark digs at night.")])
    store.close()
    again = open_store()
    assert lex.has_fts_index(again._table)
    assert ids(find(again, "aardvark", "lexical")) == [c.id]


# ------------------------------------------------------------------ weighting (off by default)


def test_recency_and_importance_weighting_are_off_by_default(open_store: OpenStore) -> None:
    text = "the office wifi password is heron42"
    old = utcnow() - timedelta(days=300)
    plain = open_store()
    [a] = plain.put([cube(text, created_at=old)])
    [b, c] = plain.put([cube(text), cube(text, priority=90)])
    query = plain.embed_query("office wifi password")
    scores = [s for _, s in plain.find("acme", 10, CubeFilter(), mode="dense", vector=query)]
    assert len(scores) == 3 and max(scores) - min(scores) < 1e-5  # age and priority ignored
    plain.close()

    recent = open_store(recency_weight=0.9, recency_half_life_s=24 * 3600.0)
    for mode in SEARCH_MODES:
        assert ids(find(recent, "office wifi password", mode))[-1] == a.id, mode
    recent.close()
    important = open_store(importance_weight=5.0)
    for mode in SEARCH_MODES:
        order = ids(find(important, "office wifi password", mode))
        assert order[0] == c.id and set(order) == {a.id, b.id, c.id}, mode


# ------------------------------------------------------------------ templates and reindex


def test_namespace_template_is_embedded_indexed_and_stored(open_store: OpenStore) -> None:
    store = open_store(embed_templates={"chat": "{speaker}: {text}"})
    [said, bare, elsewhere] = store.put(
        [
            cube("I adopted a puppy last week.", namespace="chat", metadata={"speaker": "Odalys"}),
            cube("I adopted a kitten.", namespace="chat"),  # no speaker: its bare text
            cube("Odalys left.", namespace="notes", metadata={"speaker": "Odalys"}),
        ]
    )
    rows = store._table.search().select(["id", EMBED_TEXT]).to_arrow().to_pylist()
    embedded = {r["id"]: r[EMBED_TEXT] for r in rows}
    assert embedded[said.id] == "Odalys: I adopted a puppy last week."
    assert embedded[bare.id] == "I adopted a kitten."
    assert embedded[elsewhere.id] == "Odalys left."
    assert said.plaintext is not None and said.plaintext.embedding is not None
    expected = stored_vector("Odalys: I adopted a puppy last week.")
    assert np.allclose(said.plaintext.embedding, expected, atol=1e-5)
    assert said.text == "I adopted a puppy last week."  # the cube's own text is unchanged
    assert set(ids(find(store, "Odalys", "lexical"))) == {said.id, elsewhere.id}
    # New metadata that the template embeds means a new vector.
    updated = store.update("acme", said.id, bump({"metadata": {"speaker": "Bram"}}))
    assert updated.plaintext is not None and updated.plaintext.embedding is not None
    assert not np.allclose(updated.plaintext.embedding, said.plaintext.embedding)
    assert ids(find(store, "Bram", "lexical")) == [said.id]


def test_reindex_after_a_template_change_re_embeds_only_stale_versions(
    open_store: OpenStore,
) -> None:
    before = open_store()
    turns = before.put(
        [
            cube(f"turn {i}: we talked about the garden", namespace="chat", metadata={"speaker": s})
            for i, s in enumerate(["Odalys", "Bram", "Odalys"])
        ]
    )
    [note] = before.put([cube("a note", namespace="notes")])
    before.update("acme", turns[0].id, new_text("turn 0: we talked about the orchard"))
    assert find(before, "Odalys", "lexical") == []
    before.close()

    after = open_store(embed_templates={"chat": "{speaker}: {text}"})
    progress = list(after.reindex("acme", batch_size=2))
    # Four chat versions (turn 0 has two) are stale; the note's template did not change.
    assert progress == [(0, 4), (2, 4), (4, 4)]
    assert list(after.reindex("acme")) == [(0, 0)]
    assert set(ids(find(after, "Odalys", "lexical"))) == {turns[0].id, turns[2].id}
    latest = after.get("acme", turns[0].id)
    assert latest is not None and latest.version == 2 and latest.plaintext is not None
    assert latest.text == "turn 0: we talked about the orchard"
    assert latest.plaintext.embedding is not None
    expected = stored_vector("Odalys: turn 0: we talked about the orchard")
    assert np.allclose(latest.plaintext.embedding, expected, atol=1e-5)
    history = after.history("acme", turns[0].id)
    assert [v.version for v in history] == [1, 2]
    # Still one latest version, found by every mode.
    for mode in SEARCH_MODES:
        hits = find(after, "Odalys orchard", mode, flt=CubeFilter(namespaces=("chat",)))
        assert ids(hits).count(turns[0].id) == 1
    assert list(after.reindex("acme", ["notes"], everything=True)) == [(0, 1), (1, 1)]
    assert after.get("acme", note.id) is not None
    assert list(after.reindex("globex")) == [(0, 0)]


def test_a_table_from_before_templates_gets_its_embed_text_column(
    tmp_path: Path, open_store: OpenStore
) -> None:
    first = open_store()
    [old] = first.put([cube("The heron nests by the lake.")])
    first.close()
    # Drop the column, as in a table written before it existed.
    table = lancedb.connect(str(tmp_path / "plaintext")).open_table("cubes")
    for name in lex.FTS_INDEXES.values():
        table.drop_index(name)
    table.drop_columns([EMBED_TEXT, SITUATED_TEXT])
    assert EMBED_TEXT not in table.schema.names
    store = open_store(embed_templates={"*": "{speaker}: {text}"})
    assert ids(find(store, "heron", "lexical")) == [old.id]
    rows = store._table.search().select([EMBED_TEXT, SITUATED_TEXT]).to_arrow().to_pylist()
    assert rows == [{EMBED_TEXT: old.text, SITUATED_TEXT: old.text}]
    assert list(store.reindex("acme")) == [(0, 0)]  # the texts were embedded as they are


# ------------------------------------------------------------------ context templates

QUESTION = "Have you been to the new pottery studio on Elm Street?"
ANSWER = "Yes, I went there last week and made a bowl!"


def _turns(store: PlaintextStore) -> list[MemCube]:
    return store.put(
        [
            cube(QUESTION, namespace="chat", metadata={"speaker": "Odalys"}),
            cube(
                ANSWER,
                namespace="chat",
                metadata={"speaker": "Bram", "context": f"Odalys: {QUESTION}"},
            ),
            cube("The pottery fair opens in May.", namespace="notes", metadata={"context": "x"}),
        ]
    )


def test_context_template_situates_a_cube_for_both_rankers(open_store: OpenStore) -> None:
    store = open_store(
        embed_templates={"chat": "{speaker}: {text}"}, context_templates={"chat": "{context}"}
    )
    [asked, answered, note] = _turns(store)
    rows = store._table.search().select(["id", EMBED_TEXT, SITUATED_TEXT]).to_arrow()
    texts = {r["id"]: (r[EMBED_TEXT], r[SITUATED_TEXT]) for r in rows.to_pylist()}
    assert texts[answered.id] == (f"Bram: {ANSWER}", f"Bram: {ANSWER}\nOdalys: {QUESTION}")
    assert texts[asked.id] == (f"Odalys: {QUESTION}",) * 2  # no context key: no context
    assert texts[note.id] == (note.text,) * 2  # no context template in "notes"
    # The situated text is what is embedded; the cube's own text is unchanged.
    assert answered.plaintext is not None and answered.plaintext.embedding is not None
    expected = stored_vector(f"Bram: {ANSWER}\nOdalys: {QUESTION}")
    assert np.allclose(answered.plaintext.embedding, expected, atol=1e-5)
    assert answered.text == ANSWER
    # The answer never says "pottery": its context does, so every mode finds it.
    chat = CubeFilter(namespaces=("chat",))
    for mode in SEARCH_MODES:
        assert set(ids(find(store, "pottery studio Elm", mode, flt=chat))) == {
            asked.id,
            answered.id,
        }, mode
    # Its own words still rank it first.
    for mode in SEARCH_MODES:
        assert ids(find(store, "Bram made a bowl last week", mode, flt=chat))[0] == answered.id
    # Updating the context re-embeds, and both indexes see it at once.
    moved = store.update(
        "acme", answered.id, bump({"metadata": {"speaker": "Bram", "context": "Odalys: Hi"}})
    )
    assert moved.plaintext is not None and moved.plaintext.embedding is not None
    assert not np.allclose(moved.plaintext.embedding, answered.plaintext.embedding)
    assert ids(find(store, "pottery studio Elm", "lexical", flt=chat)) == [asked.id]


def test_without_a_context_template_the_context_is_not_indexed(open_store: OpenStore) -> None:
    store = open_store(embed_templates={"chat": "{speaker}: {text}"})
    [asked, _answered, _note] = _turns(store)
    chat = CubeFilter(namespaces=("chat",))
    assert ids(find(store, "pottery studio Elm", "lexical", flt=chat)) == [asked.id]


def test_reindex_after_adding_a_context_template_re_embeds_the_cubes_with_context(
    open_store: OpenStore,
) -> None:
    before = open_store(embed_templates={"chat": "{speaker}: {text}"})
    [_asked, answered, _note] = _turns(before)
    before.close()
    after = open_store(
        embed_templates={"chat": "{speaker}: {text}"}, context_templates={"chat": "{context}"}
    )
    # Only the answer has a context in a namespace with a context template.
    assert list(after.reindex("acme")) == [(0, 1), (1, 1)]
    latest = after.get("acme", answered.id)
    assert latest is not None and latest.plaintext is not None
    assert latest.plaintext.embedding is not None
    expected = stored_vector(f"Bram: {ANSWER}\nOdalys: {QUESTION}")
    assert np.allclose(latest.plaintext.embedding, expected, atol=1e-5)
    assert answered.id in ids(find(after, "pottery studio Elm", "lexical"))
    assert list(after.reindex("acme")) == [(0, 0)]


@pytest.mark.parametrize(
    ("field", "template", "says"),
    [
        ("embed_templates", "{speaker}", "must name {text}"),
        ("embed_templates", "{text} {0}", "plain {key} fields"),
        ("context_templates", "always the same", "names no field"),
        ("context_templates", "{context[0]}", "plain {key} fields"),
        ("context_templates", "{context", "context template of 'chat'"),
    ],
)
def test_bad_templates_are_refused_with_what_to_fix(field: str, template: str, says: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(says)):
        PlaintextSettings.model_validate({field: {"chat": template}})
    assert PlaintextSettings.model_validate({field: {"chat": "{text} {context}"}})
