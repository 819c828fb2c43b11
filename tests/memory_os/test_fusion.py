"""Near-duplicate detection and the fused text, on cubes built in memory."""

from __future__ import annotations

from memos.cube import Kind, MemCube, PlaintextPayload, State, utcnow
from memos.fusion import fused_text, groups, jaccard, words
from memos.ids import new_id


def cube(text: str, vector: list[float]) -> MemCube:
    now = utcnow()
    return MemCube(
        id=new_id(),
        tenant="acme",
        namespace="default",
        kind=Kind.PLAINTEXT,
        state=State.ACTIVE,
        version=1,
        created_at=now,
        updated_at=now,
        plaintext=PlaintextPayload(text=text, embedding=tuple(vector)),
    )


def test_near_duplicates_need_both_similar_vectors_and_shared_words() -> None:
    a = cube("Alice moved to Berlin in May.", [1.0, 0.0, 0.0])
    b = cube("Alice moved to Berlin in May. She likes it.", [0.99, 0.1, 0.0])
    # Same vector, different words: not a duplicate (the embedding alone is not enough).
    c = cube("Bob sold his car last week.", [1.0, 0.01, 0.0])
    # Same words, far vector: not a duplicate either.
    d = cube("Alice moved to Berlin in May.", [0.0, 0.0, 1.0])
    found = groups([a, b, c, d], similarity=0.95, lexical=0.5)
    assert [{x.id for x in g} for g in found] == [{a.id, b.id}]


def test_groups_are_transitive() -> None:
    a = cube("the cat sat on the mat", [1.0, 0.0])
    b = cube("the cat sat on the red mat", [1.0, 0.05])
    c = cube("the cat sat on the red mat today", [1.0, 0.1])
    (g,) = groups([a, b, c], similarity=0.99, lexical=0.7)
    assert {x.id for x in g} == {a.id, b.id, c.id}


def test_the_fused_text_loses_no_sentence() -> None:
    a = cube("Alice moved to Berlin. She works at a bakery.", [1.0])
    b = cube("Alice moved to Berlin! She has a cat.", [1.0])
    text = fused_text([a, b])
    assert text.startswith("Alice moved to Berlin. She works at a bakery.")
    assert "She has a cat." in text
    assert text.count("Berlin") == 1  # the same sentence, punctuated differently, once


def test_jaccard() -> None:
    assert jaccard(words("a b c"), words("A B d")) == 0.5
    assert jaccard(frozenset(), frozenset()) == 1.0
