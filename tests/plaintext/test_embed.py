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
        assert float(vector @ reference[i]) > 0.9999


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
    assert float(lanes.embed_query(texts[7]) @ reference[7]) > 0.9999


def test_a_query_runs_the_forward_pass_straight_with_the_batch_paths_numbers(
    minilm: Embedder,
) -> None:
    assert isinstance(minilm, MiniLMEmbedder)
    # MiniLM is a transformer with mean pooling: its queries skip sentence-transformers'
    # batching machinery (embed.py, _Lane.encode_one).
    assert minilm._query._direct is not None
    texts = [
        "Where did Caroline move from?",
        "Zoë's café on the Straße opens at 7 — naïve émigrés welcome 🙂",
        " ".join(f"word{i}" for i in range(600)),  # past the 256-token limit: truncated
        "x",
    ]
    reference = minilm.embed(texts)
    for text, expected in zip(texts, reference, strict=True):
        vector = minilm.embed_query(text)
        assert vector.dtype == np.float32 and vector.shape == expected.shape
        assert np.allclose(vector, expected, atol=1e-5), text[:40]
