"""PyTorch's own transformer layers (``nn.TransformerEncoderLayer``, ``nn.MultiheadAttention``): blocks, widths,
and per-head attention weights (``need_weights=True, average_attn_weights=False``, the fused fast path off for the
pass and restored)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from cerebro.adapters.base import ModelAdapter

__all__ = ["TorchTransformer"]

_BLOCKS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


class TorchTransformer(ModelAdapter):
    """Models built from ``torch.nn`` transformer layers or ``nn.MultiheadAttention``."""

    name = "torch.nn"

    def matches(self, model: nn.Module) -> bool:
        return bool(self.token_blocks(model) or self.attention_modules(model))

    def token_blocks(self, model: nn.Module) -> list[str]:
        """``nn.TransformerEncoderLayer``/``DecoderLayer``, and blocks written around an ``nn.MultiheadAttention``
        child (torchvision's ViT ``encoder.layers.encoder_layer_N``)."""
        parents = {n.rpartition(".")[0] for n, m in model.named_modules()
                   if isinstance(m, nn.MultiheadAttention) and "." in n}
        return [n for n, m in model.named_modules() if isinstance(m, _BLOCKS) or n in parents]

    def hidden_sizes(self, model: nn.Module) -> set[int]:
        return {int(m.embed_dim) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}

    def attention_modules(self, model: nn.Module) -> dict[str, nn.Module]:
        """Every ``nn.MultiheadAttention``, and modules named ``attn_drop`` (timm-style attention written by hand,
        whose dropout receives the probabilities)."""
        return {n: m for n, m in model.named_modules()
                if isinstance(m, nn.MultiheadAttention) or n.rsplit(".", 1)[-1] == "attn_drop"}

    @contextmanager
    def attention_pass(self, model: nn.Module) -> Iterator[None]:
        handles = []
        fastpath = torch.backends.mha.get_fastpath_enabled()

        def ask(_m: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

        try:
            torch.backends.mha.set_fastpath_enabled(False)  # the fused path never computes the weights
            for m in self.attention_modules(model).values():
                if isinstance(m, nn.MultiheadAttention):
                        handles.append(m.register_forward_pre_hook(ask, with_kwargs=True))
            yield
        finally:
            for h in handles:
                h.remove()
            torch.backends.mha.set_fastpath_enabled(fastpath)
