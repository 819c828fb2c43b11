"""The query lane's forward pass over prepacked weights (memos/packed_bert.py): the same
hidden states as the Hugging Face module, on a tiny BERT made here and on MiniLM itself."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from memos.config import EmbedSettings
from memos.embed import Embedder, MiniLMEmbedder
from memos.packed_bert import PackedBert

from .test_embed import QUERY_TEXTS


def tiny_bert(**overrides: object) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=120,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=32,
        **overrides,  # type: ignore[arg-type]
    )
    model = BertModel(config, add_pooling_layer=False)
    return model.eval()


def test_the_packed_pass_gives_the_modules_hidden_states() -> None:
    model = tiny_bert()
    packed = PackedBert.build(model, torch.float32)
    assert packed is not None
    ids = torch.tensor([101, 7, 42, 99, 3, 64, 102])
    with torch.inference_mode():
        expected = model(input_ids=ids.unsqueeze(0)).last_hidden_state[0]
        got = packed(ids)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5), float((got - expected).abs().max())
    # Every length up to the position table's, one token included.
    with torch.inference_mode():
        for n in (1, 31, 32):
            ids = torch.arange(n) % 120
            expected = model(input_ids=ids.unsqueeze(0)).last_hidden_state[0]
            assert torch.allclose(packed(ids), expected, atol=1e-5), n
        with pytest.raises(ValueError, match=r"1\.\.32"):
            packed(torch.arange(33) % 120)


def test_bfloat16_packing_stays_within_bfloat16_rounding() -> None:
    model = tiny_bert()
    packed = PackedBert.build(model, torch.bfloat16)
    assert packed is not None
    ids = torch.tensor([101, 17, 4, 88, 102])
    with torch.inference_mode():
        expected = model(input_ids=ids.unsqueeze(0)).last_hidden_state[0]
        got = packed(ids)
    assert got.dtype == torch.bfloat16
    cosines = torch.nn.functional.cosine_similarity(got.float(), expected, dim=-1)
    assert float(cosines.min()) > 0.999


@pytest.mark.parametrize(
    "overrides",
    [{"hidden_act": "relu"}, {"position_embedding_type": "relative_key"}, {"is_decoder": True}],
)
def test_models_it_does_not_serve_keep_their_own_pass(overrides: dict[str, object]) -> None:
    assert PackedBert.build(tiny_bert(**overrides), torch.float32) is None


def test_minilm_queries_run_packed_with_the_models_numbers(minilm: Embedder) -> None:
    reference = minilm.embed(QUERY_TEXTS)
    fp32 = MiniLMEmbedder(EmbedSettings(workers=1, query_dtype="float32"))
    assert fp32.query_packed
    for text, expected in zip(QUERY_TEXTS, reference, strict=True):
        vector = fp32.embed_query(text)
        assert vector.dtype == np.float32 and vector.shape == expected.shape
        assert np.allclose(vector, expected, atol=1e-5), text[:40]
    bf16 = MiniLMEmbedder(EmbedSettings(workers=1, query_dtype="bfloat16"))
    assert bf16.query_packed
    for text, expected in zip(QUERY_TEXTS, reference, strict=True):
        vector = bf16.embed_query(text)
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
        assert float(vector @ expected) > 0.999, text[:40]
    assert bf16.warmed.wait(120), "the packed lane's warm-up never finished"


class _Strict(MiniLMEmbedder):
    # No pass can agree this well: the check must refuse the packed weights.
    PACKED_MIN_COSINE = 1.5


def test_packed_weights_that_disagree_with_the_model_are_not_used(
    minilm: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="memos.embed"):
        strict = _Strict(EmbedSettings(workers=1, query_dtype="float32"))
    assert not strict.query_packed
    assert "packed query weights disagree" in caplog.text
    expected = minilm.embed(QUERY_TEXTS[:1])[0]
    assert np.allclose(strict.embed_query(QUERY_TEXTS[0]), expected, atol=1e-5)
