"""The MiniLM embedder from the wheel: shape, normalisation, meaning, thread safety."""

from __future__ import annotations

import threading

import numpy as np

from memos.config import EmbedSettings
from memos.embed import (
    Embedder,
    MiniLMEmbedder,
    embed_one,
    measure_throughput,
    parallelism,
)


def test_embeddings_are_normalised_float32_rows(minilm: Embedder) -> None:
    out = minilm.embed(["The cat sat on the mat.", "Quarterly revenue grew by 4%."])
    assert out.shape == (2, 384) and out.dtype == np.float32 and minilm.dim == 384
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert minilm.embed([]).shape == (0, 384)


def test_similar_sentences_are_closer(minilm: Embedder) -> None:
    a, b, c = minilm.embed(
        ["How do I reset my password?", "I forgot my login password.", "Bananas are yellow."]
    )
    assert float(a @ b) > float(a @ c) + 0.3


def test_query_lane_matches_the_batch_lane_under_concurrency(minilm: Embedder) -> None:
    texts = [f"sentence number {i} about the weather in town {i % 7}" for i in range(64)]
    reference = minilm.embed(texts)
    results: dict[int, np.ndarray] = {}

    def bulk() -> None:
        for _ in range(3):
            assert np.allclose(minilm.embed(texts), reference, atol=1e-5)

    def queries(offset: int) -> None:
        for i in range(offset, 64, 4):
            results[i] = embed_one(minilm, texts[i])

    threads = [threading.Thread(target=bulk)] + [
        threading.Thread(target=queries, args=(o,)) for o in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(64))
    for i, vector in results.items():
        # 0.999: the query lane may run in bfloat16 (see the bfloat16 test below).
        assert float(vector @ reference[i]) > 0.999


def test_measure_throughput(minilm: Embedder) -> None:
    rate = measure_throughput(minilm, [f"short text {i}" for i in range(64)], batch_size=32)
    assert rate > 1.0


def test_a_batch_split_over_lanes_matches_one_lane(minilm: Embedder) -> None:
    texts = [
        f"note {i}: the {['red', 'blue', 'green'][i % 3]} bus leaves at {i} pm" for i in range(50)
    ]
    reference = minilm.embed(texts)
    lanes = MiniLMEmbedder(EmbedSettings(workers=3, threads=1))
    assert parallelism(lanes) == 3
    # 50 texts over 3 lanes (at least MIN_SPLIT each): three parts, in order.
    assert np.allclose(lanes.embed(texts), reference, atol=1e-5)
    assert np.allclose(lanes.embed(texts[:5]), reference[:5], atol=1e-5)
    assert float(lanes.embed_query(texts[7]) @ reference[7]) > 0.999


QUERY_TEXTS = [
    "Where did Caroline move from?",
    "Zoë's café on the Straße opens at 7 — naïve émigrés welcome 🙂",
    " ".join(f"word{i}" for i in range(600)),  # past the 256-token limit: truncated
    "x",
]


def test_a_query_runs_the_forward_pass_straight_with_the_batch_paths_numbers(
    minilm: Embedder,
) -> None:
    fp32 = MiniLMEmbedder(EmbedSettings(workers=1, query_dtype="float32", query_packed=False))
    assert fp32.query_dtype == "float32" and not fp32.query_packed
    # MiniLM is a transformer with mean pooling: its queries skip sentence-transformers'
    # batching machinery (embed.py, _Lane.encode_one).
    assert fp32._query._direct is not None
    reference = minilm.embed(QUERY_TEXTS)
    for text, expected in zip(QUERY_TEXTS, reference, strict=True):
        vector = fp32.embed_query(text)
        assert vector.dtype == np.float32 and vector.shape == expected.shape
        assert np.allclose(vector, expected, atol=1e-5), text[:40]


def test_a_bfloat16_query_lane_stays_within_rounding_of_float32_and_ranks_the_same(
    minilm: Embedder,
) -> None:
    bf16 = MiniLMEmbedder(EmbedSettings(workers=1, query_dtype="bfloat16", query_packed=False))
    assert bf16.query_dtype == "bfloat16"
    lane_weights = next(bf16._query._model.parameters())
    bulk_lane = bf16._bulk._idle.get()
    bf16._bulk._idle.put(bulk_lane)
    bulk_weights = next(bulk_lane._model.parameters())
    # Its own copy: converting a sibling would have turned the bulk lanes' weights too.
    assert str(lane_weights.dtype) == "torch.bfloat16"
    assert str(bulk_weights.dtype) == "torch.float32"
    reference = minilm.embed(QUERY_TEXTS)
    for text, expected in zip(QUERY_TEXTS, reference, strict=True):
        vector = bf16.embed_query(text)
        assert vector.dtype == np.float32 and vector.shape == expected.shape
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
        assert float(vector @ expected) > 0.999, text[:40]
    documents = [
        "The dentist appointment moved to Thursday at 3pm.",
        "Our Lisbon office closes at 6 on Fridays.",
        "The Postgres replica lags behind during backups.",
        "Grace booked a trip to Kyoto in September.",
        "The deploy key rotates every quarter.",
    ]
    stored = minilm.embed(documents)
    questions = ["when is the dentist?", "who is going to Japan?", "why is the database slow?"]
    for question, want in zip(questions, [0, 3, 2], strict=True):
        assert int(np.argmax(stored @ bf16.embed_query(question))) == want, question
        assert int(np.argmax(stored @ minilm.embed([question])[0])) == want, question


def test_auto_picks_bfloat16_only_where_the_cpu_has_it() -> None:
    from memos.embed import native_bf16, query_dtype

    assert query_dtype("auto") == ("bfloat16" if native_bf16() else "float32")
    assert query_dtype("float32") == "float32" and query_dtype("bfloat16") == "bfloat16"


def test_a_bfloat16_query_lane_warms_every_short_length_in_the_background() -> None:
    bf16 = MiniLMEmbedder(EmbedSettings(workers=1, query_dtype="bfloat16"))
    # Queries are served while the warm-up runs, with the same numbers as after it.
    during = bf16.embed_query("Where did Caroline move from?")
    assert bf16.warmed.wait(120), "the warm-up never finished"
    after = bf16.embed_query("Where did Caroline move from?")
    assert np.allclose(during, after, atol=1e-6)
    plain = EmbedSettings(workers=1, query_dtype="float32", query_packed=False)
    assert MiniLMEmbedder(plain).warmed.is_set()
