"""``timm`` models (VisionTransformer, DeiT, EVA, ... and timm CNNs).

* Token blocks: timm blocks with ``attn`` and ``mlp`` children (``blocks.N`` of a VisionTransformer).
* Prefix tokens: the model's own ``num_prefix_tokens`` (class + register/distillation tokens).
* Attention weights: timm's fused kernel (``F.scaled_dot_product_attention``) never materialises them; for one pass
  every attention module gets ``fused_attn = False`` (restored afterwards), and the probabilities are read where
  the unfused path hands them to ``attn_drop``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from cerebro.adapters.base import ModelAdapter

__all__ = ["Timm"]


def _is_timm(m: nn.Module) -> bool:
    return type(m).__module__.startswith("timm.")


class Timm(ModelAdapter):
    """Any module of a ``timm`` class in the model."""

    name = "timm"

    def matches(self, model: nn.Module) -> bool:
        return any(_is_timm(m) for m in model.modules())

    def token_blocks(self, model: nn.Module) -> list[str]:
        return [n for n, m in model.named_modules()
                if _is_timm(m) and hasattr(m, "attn") and hasattr(m, "mlp") and hasattr(m.attn, "fused_attn")]

    def prefix_tokens(self, model: nn.Module) -> int | None:
        for m in model.modules():
            if _is_timm(m) and isinstance(getattr(m, "num_prefix_tokens", None), int) and hasattr(m, "blocks"):
                return int(m.num_prefix_tokens)
        return None

    def hidden_sizes(self, model: nn.Module) -> set[int]:
        return {int(m.embed_dim) for m in model.modules()
                if _is_timm(m) and hasattr(m, "blocks") and isinstance(getattr(m, "embed_dim", None), int)}

    def _fused(self, model: nn.Module) -> list[nn.Module]:
        return [m for m in model.modules() if _is_timm(m) and hasattr(m, "fused_attn")]

    def attention_modules(self, model: nn.Module) -> dict[str, nn.Module]:
        owners = {id(m) for m in self._fused(model)}
        mods = dict(model.named_modules())
        return {n: m for n, m in mods.items()
                if n.rsplit(".", 1)[-1] == "attn_drop" and id(mods.get(n.rpartition(".")[0])) in owners}

    @contextmanager
    def attention_pass(self, model: nn.Module) -> Iterator[None]:
        saved = [(m, m.fused_attn) for m in self._fused(model)]
        try:
            for m, _ in saved:
                m.fused_attn = False
            yield
        finally:
            for m, fused in saved:
                m.fused_attn = fused

    def weights_hint(self) -> str:
        return "set fused_attn = False on the timm Attention modules (or TIMM_FUSED_ATTN=0)"
