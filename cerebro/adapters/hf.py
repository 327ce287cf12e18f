"""Hugging Face ``transformers`` models (ViT, DeiT, BERT, wav2vec2, ... on transformers 4.x and 5.x).

* Token blocks: the repeated encoder layers (``vit.encoder.layer.N`` in transformers 4, ``vit.layers.N`` in 5,
  ``bert.encoder.layer.N``), found as a ``ModuleList`` of one class that contains attention.
* Attention weights: the default SDPA/flash kernels never compute them. For one pass every config of the model is
  switched to ``attn_implementation="eager"`` with ``output_attentions=True`` (4.x returns the probabilities only
  then; 5.x attention modules always return them under eager), and restored afterwards. The weights are read from
  the attention modules' ``(output, weights)`` tuples (5.x: the classes in ``_can_record_outputs["attentions"]``).
* Output: a ``ModelOutput`` with ``logits`` is read through ``logits`` without ``output_key``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from cerebro.adapters.base import ModelAdapter

__all__ = ["HuggingFace", "hf_models", "hf_configs"]

_WIDTH_KEYS = ("hidden_size", "d_model", "embed_dim", "dim")


def _transformers() -> Any:
    return sys.modules.get("transformers")  # never imported here: a model of this family has imported it already


def hf_models(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every ``PreTrainedModel`` in ``model`` (itself included)."""
    tf = _transformers()
    base = getattr(tf, "PreTrainedModel", None) if tf is not None else None
    return [] if base is None else [(n, m) for n, m in model.named_modules() if isinstance(m, base)]


def hf_configs(model: nn.Module) -> list[Any]:
    """Every distinct config of the model's ``PreTrainedModel`` parts and their sub-configs."""
    seen: dict[int, Any] = {}
    todo = [m.config for _, m in hf_models(model) if getattr(m, "config", None) is not None]
    while todo:
        cfg = todo.pop()
        if id(cfg) in seen:
            continue
        seen[id(cfg)] = cfg
        for key in getattr(cfg, "sub_configs", None) or {}:
            sub = getattr(cfg, key, None)
            if sub is not None:
                todo.append(sub)
    return list(seen.values())


def _has_attention(module: nn.Module) -> bool:
    return any("Attention" in type(m).__name__ for m in module.modules())


def _recorded_classes(pm: nn.Module, key: str) -> tuple[type, ...]:
    """Classes transformers 5 records for ``key`` (``attentions`` / ``hidden_states``) on this model."""
    spec = getattr(pm, "_can_record_outputs", None) or {}
    items = spec.get(key)
    items = items if isinstance(items, (list, tuple)) else [items]
    out = []
    for item in items:
        cls = item if isinstance(item, type) else getattr(item, "target_class", None)
        if isinstance(cls, type) and (not hasattr(item, "index") or getattr(item, "index", 1) == 1):
            out.append(cls)
    return tuple(out)


class HuggingFace(ModelAdapter):
    """``transformers.PreTrainedModel`` anywhere in the model (a LightningModule may wrap it)."""

    name = "transformers"

    def matches(self, model: nn.Module) -> bool:
        return bool(hf_models(model))

    def token_blocks(self, model: nn.Module) -> list[str]:
        blocks: list[str] = []
        for name, m in model.named_modules():
            kids = list(m.children())
            if (isinstance(m, nn.ModuleList) and kids and len({type(k) for k in kids}) == 1
                    and type(kids[0]).__module__.startswith("transformers.") and _has_attention(kids[0])):
                blocks += [f"{name}.{i}" if name else str(i) for i in range(len(kids))]
        return blocks

    def hidden_sizes(self, model: nn.Module) -> set[int]:
        sizes = set()
        for cfg in hf_configs(model):
            for key in _WIDTH_KEYS:
                v = getattr(cfg, key, None)
                if isinstance(v, int) and v > 0:
                    sizes.add(v)
        return sizes

    def attention_modules(self, model: nn.Module) -> dict[str, nn.Module]:
        found: dict[str, nn.Module] = {}
        for pm_name, pm in hf_models(model):
            classes = _recorded_classes(pm, "attentions")
            for n, m in pm.named_modules():
                hit = isinstance(m, classes) if classes else "Attention" in type(m).__name__
                if hit:
                    found[f"{pm_name}.{n}" if pm_name and n else pm_name or n] = m
        return found

    @contextmanager
    def attention_pass(self, model: nn.Module) -> Iterator[None]:
        saved = []
        try:
            for cfg in hf_configs(model):
                internal = hasattr(cfg, "_attn_implementation_internal")
                attr = "_attn_implementation_internal" if internal else "_attn_implementation"
                saved.append((cfg, attr, getattr(cfg, attr, None), getattr(cfg, "output_attentions", False)))
                setattr(cfg, attr, "eager")  # on this config only: its sub-configs are in the list themselves
                cfg.output_attentions = True
            yield
        finally:
            for cfg, attr, impl, out_attn in reversed(saved):
                cfg.output_attentions = out_attn
                setattr(cfg, attr, impl)

    def output_key(self, output: Any) -> str | None:
        tf = _transformers()
        base = getattr(getattr(tf, "utils", None), "ModelOutput", None) if tf is not None else None
        if base is not None and isinstance(output, base) and output.get("logits") is not None:
            return "logits"
        return None

    def weights_hint(self) -> str:
        return ('load the model with attn_implementation="eager" (or call model.set_attn_implementation("eager")) '
                "and output_attentions=True")
