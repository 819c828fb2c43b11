"""LoRA adapters on the Hugging Face engine, applied with peft.

``LoRAEngine`` wraps an :class:`~memos.engines.hf.HFEngine` and injects adapter layers into
its model in place (peft's ``LoraModel``), so every engine method (prefill, generate, KV
save and restore) runs through whichever adapter is active. Several adapters can be loaded
at once (the engine's slots); one is active at a time, or none (the base model). When the
last adapter is unloaded the LoRA layers are removed and the original modules put back, so
the base model computes exactly what it did before (bit for bit).

Adapters arrive as validated :class:`~memos.tiers.parameter.weights.LoraWeights`; their
factors are copied into the layers directly (no checkpoint loading path, no pickle). The
adapter layers are created for exactly the modules the adapter has weights for, with the
adapter's own rank, alpha, rsLoRA and per-module patterns, so peft computes the same
scale it would for the same files.

Adapter switching and forward passes must not interleave: run generation inside
``with engine.use(adapter_id): ...``, which holds the engine's lock.
"""

from __future__ import annotations

import contextlib
import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count

import torch
from peft import LoraConfig
from peft.tuners.lora import LoraModel
from peft.tuners.lora.layer import LoraLayer
from torch import nn

from memos.engines.hf import HFEngine
from memos.errors import FailedPrecondition, InvalidArgument, NotFound
from memos.tiers.activation.keys import Adapter
from memos.tiers.parameter.fingerprint import BaseModelSpec
from memos.tiers.parameter.weights import LoraWeights, module_rank_alpha


@dataclass(frozen=True, slots=True)
class _Loaded:
    slot_name: str
    path: str
    modules: tuple[str, ...]


def injection_config(weights: LoraWeights) -> LoraConfig:
    """A peft config creating layers for exactly ``weights``' modules, ranks and scales."""
    config = weights.config
    modules = sorted(weights.modules)
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    rank_pattern, alpha_pattern = {}, {}
    for name in modules:
        r, a = module_rank_alpha(config, name)
        if r != rank:
            rank_pattern[re.escape(name)] = r
        if a != alpha:
            alpha_pattern[re.escape(name)] = a
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int, computes in float
        use_rslora=bool(config.get("use_rslora", False)),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        target_modules=modules,
        lora_dropout=0.0,
        bias="none",
        inference_mode=True,
    )


def _factor_layers(layer: LoraLayer, slot_name: str) -> tuple[nn.Linear, nn.Linear]:
    a, b = layer.lora_A[slot_name], layer.lora_B[slot_name]
    if not isinstance(a, nn.Linear) or not isinstance(b, nn.Linear):
        raise RuntimeError(f"adapter {slot_name!r} is not a linear LoRA here")
    return a, b


def install_factors(model: nn.Module, slot_name: str, weights: LoraWeights) -> None:
    """Put ``weights``' factors into the adapter layers called ``slot_name``."""
    for name, module in weights.modules.items():
        layer = model.get_submodule(name)
        if not isinstance(layer, LoraLayer):
            raise RuntimeError(f"module {name!r} carries no adapter layer")
        base = layer.get_base_layer()
        dtype = base.weight.dtype if isinstance(base, nn.Linear) else torch.float32
        a_layer, b_layer = _factor_layers(layer, slot_name)
        a_layer.weight = nn.Parameter(module.a.to(dtype).clone(), requires_grad=False)
        b_layer.weight = nn.Parameter(module.b.to(dtype).clone(), requires_grad=False)


def extract_factors(
    model: nn.Module, slot_name: str
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The (A, B) factors of adapter ``slot_name`` per module name of ``model``."""
    out = {}
    for name, layer in model.named_modules():
        if isinstance(layer, LoraLayer) and slot_name in layer.lora_A:
            a, b = _factor_layers(layer, slot_name)
            out[name] = (a.weight.detach().clone(), b.weight.detach().clone())
    return out


class LoRAEngine:
    """An HF engine with adapter slots: ``load``, ``activate`` / ``use``, ``unload``."""

    def __init__(self, engine: HFEngine) -> None:
        self.engine = engine
        self.spec = BaseModelSpec.from_model(engine.model, engine.layout.model_id)
        self._tuner: LoraModel | None = None
        self._loaded: dict[str, _Loaded] = {}
        self._active: str | None = None
        self._names = count()
        self._lock = threading.RLock()

    @property
    def loaded(self) -> tuple[str, ...]:
        return tuple(self._loaded)

    @property
    def active(self) -> str | None:
        return self._active

    def kv_adapter(self) -> Adapter | None:
        """The active adapter's identity for KV chunk keys (None for the base model)."""
        if self._active is None:
            return None
        return Adapter(self._active, self._loaded[self._active].path or self._active)

    def load(self, adapter_id: str, weights: LoraWeights, *, path: str = "") -> None:
        """Load ``weights`` into a new slot called ``adapter_id`` (not activated).

        ``path`` is where the weights came from: it joins the adapter's KV identity, as in vLLM.
        """
        bad = sorted(set(weights.modules) - set(self.spec.linear))
        if bad:
            raise InvalidArgument(f"module {bad[0]!r} is not a linear layer of this engine's model")
        with self._lock:
            if adapter_id in self._loaded:
                raise FailedPrecondition(f"adapter {adapter_id!r} is already loaded")
            slot_name = f"slot{next(self._names)}"
            config = injection_config(weights)
            model = self.engine.model
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if self._tuner is None:
                    self._tuner = LoraModel(model, config, slot_name, low_cpu_mem_usage=True)
                    # Loading never activates: the base stays in use until activate().
                    self._tuner.disable_adapter_layers()
                else:
                    self._tuner.peft_config[slot_name] = config
                    self._tuner.inject_adapter(model, slot_name, low_cpu_mem_usage=True)
            install_factors(model, slot_name, weights)
            self._loaded[adapter_id] = _Loaded(slot_name, path, tuple(sorted(weights.modules)))
            self._select(self._active)

    def activate(self, adapter_id: str | None) -> None:
        """Make ``adapter_id`` the adapter every forward pass uses (None: the base model)."""
        with self._lock:
            if adapter_id is not None and adapter_id not in self._loaded:
                raise NotFound(f"adapter {adapter_id!r} is not loaded in this engine")
            self._select(adapter_id)

    @contextlib.contextmanager
    def use(self, adapter_id: str | None) -> Iterator[HFEngine]:
        """Hold the engine with ``adapter_id`` active for the duration of the block."""
        with self._lock:
            previous = self._active
            self.activate(adapter_id)
            try:
                yield self.engine
            finally:
                if previous is None or previous in self._loaded:
                    self._select(previous)

    def unload(self, adapter_id: str) -> None:
        """Free ``adapter_id``'s slot; the last unload restores the original modules."""
        with self._lock:
            loaded = self._loaded.pop(adapter_id, None)
            if loaded is None:
                raise NotFound(f"adapter {adapter_id!r} is not loaded in this engine")
            tuner = self._tuner
            assert tuner is not None
            if self._active == adapter_id:
                self._active = None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if not self._loaded:
                    tuner.unload()
                    self._tuner = None
                    return
                tuner.delete_adapter(loaded.slot_name)
            self._select(self._active)

    def _select(self, adapter_id: str | None) -> None:
        tuner = self._tuner
        self._active = adapter_id
        if tuner is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if adapter_id is None:
                tuner.disable_adapter_layers()
            else:
                tuner.enable_adapter_layers()
                tuner.set_adapter(self._loaded[adapter_id].slot_name, inference_mode=True)
