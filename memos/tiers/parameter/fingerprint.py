"""What an adapter is validated against: the base model's id and its linear layers' shapes.

A LoRA adapter attaches to named linear modules; it fits a base model when each of its
modules exists there and its factors have that module's in/out features. ``BaseModelSpec``
holds exactly that (module name -> (in_features, out_features)) plus the model's
fingerprint string (for the HF engine, its ``ModelLayout.model_id``: a digest of the config
and weights). It comes from a loaded model, or from a model's ``config.json`` alone with
the modules built on the meta device (no weights read), which is what the daemon has when
the model itself runs in vLLM.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True, slots=True)
class BaseModelSpec:
    model_id: str
    #: Linear module name (as in ``model.named_modules()``) -> (in_features, out_features).
    linear: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.model_id:
            raise ValueError("a base model spec needs a model id")

    @property
    def shapes_digest(self) -> str:
        """sha256 over the module names and shapes: two specs with it equal accept alike."""
        doc = json.dumps(sorted((k, list(v)) for k, v in self.linear.items()))
        return hashlib.sha256(doc.encode()).hexdigest()

    def matching(self, target_modules: str | Iterable[str]) -> list[str]:
        """The linear modules peft would target with ``target_modules`` (its matching rule).

        A string is a regular expression matched against the whole module name; a list
        matches a module whose name equals an entry or ends with ``"." + entry``.
        """
        if isinstance(target_modules, str):
            pattern = re.compile(target_modules)
            return [m for m in self.linear if pattern.fullmatch(m)]
        wanted = list(target_modules)
        return [m for m in self.linear if any(m == t or m.endswith(f".{t}") for t in wanted)]

    @classmethod
    def from_model(cls, model: nn.Module, model_id: str) -> BaseModelSpec:
        """The spec of a loaded model (adapter layers already injected are seen through)."""
        try:
            from peft.tuners.tuners_utils import BaseTunerLayer
        except ImportError:  # without peft (a daemon beside vLLM) no adapter is injected
            return cls(model_id=model_id, linear=_linear(model))

        linear: dict[str, tuple[int, int]] = {}
        inside_adapter: list[str] = []
        for name, module in model.named_modules():
            if any(name.startswith(prefix) for prefix in inside_adapter):
                continue
            layer = module
            if isinstance(module, BaseTunerLayer):
                inside_adapter.append(f"{name}.")
                layer = module.get_base_layer()
            if isinstance(layer, nn.Linear):
                linear[name] = (layer.in_features, layer.out_features)
        return cls(model_id=model_id, linear=linear)

    @classmethod
    def from_config_dir(cls, path: Path | str, model_id: str) -> BaseModelSpec:
        """The spec of the model whose ``config.json`` is in ``path``, without its weights."""
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(Path(path), local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
        return cls.from_model(model, model_id)


def _linear(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {
        name: (m.in_features, m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear)
    }
