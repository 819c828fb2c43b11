"""The MiniLM embedder from the wheel: shape, normalisation, meaning, thread safety."""

from __future__ import annotations

import threading

import numpy as np

from memos.embed import Embedder, embed_one, measure_throughput


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
