"""The adapter interface: what one model family knows about its models (tokens, attention weights, outputs).

Diagnostics never test class names themselves: they ask :mod:`cerebro.adapters`, which asks every family adapter
that recognises the model. An adapter that changes a model for one pass (attention implementation, fused kernels)
does it in a context manager that restores the model on exit, whatever happens, like hooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

__all__ = ["ModelAdapter", "square_weights", "declared_prefix_tokens"]


class ModelAdapter:
    """One model family. Every method has a neutral default, so a family overrides only what it knows."""

    #: Family name, recorded in ``summary.json`` metrics (e.g. ``transformers``, ``timm``, ``torch.nn``).
    name: str = "generic"

    def matches(self, model: nn.Module) -> bool:
        """Whether ``model`` (or one of its submodules) belongs to this family."""
        return False

    def token_blocks(self, model: nn.Module) -> list[str]:
        """Dotted names of the transformer blocks whose input and output are tokens ``(B, N, D)``, in order."""
        return []

    def prefix_tokens(self, model: nn.Module) -> int | None:
        """Class/register/distillation tokens before the patch tokens, when the family says so (else ``None``)."""
        return None

    def hidden_sizes(self, model: nn.Module) -> set[int]:
        """Token widths ``D`` of the model's token layers (e.g. the config's ``hidden_size``)."""
        return set()

    def attention_modules(self, model: nn.Module) -> dict[str, nn.Module]:
        """Modules whose forward output holds the attention probabilities during :meth:`attention_pass`."""
        return {}

    @contextmanager
    def attention_pass(self, model: nn.Module) -> Iterator[None]:
        """Switch the model to attention that exposes its weights for the block; restore it afterwards."""
        yield

    def attention_weights(self, module: nn.Module, output: Any) -> Tensor | None:
        """The ``(B, heads, N, N)`` probabilities in one attention module's output, or ``None``."""
        return square_weights(output)

    def output_key(self, output: Any) -> str | None:
        """The field of a structured model output that holds the prediction (e.g. ``logits``), or ``None``."""
        return None

    def weights_hint(self) -> str:
        """How a user makes this family expose attention weights (named in errors)."""
        return ""


def square_weights(output: Any) -> Tensor | None:
    """``(B, H, N, N)`` attention weights in a module's output: the tensor itself or a tuple element."""
    items = output if isinstance(output, (tuple, list)) else (output,)
    for t in items:
        if isinstance(t, Tensor) and t.ndim in (3, 4) and t.shape[-1] == t.shape[-2] and t.is_floating_point():
            return t if t.ndim == 4 else t[:, None]
    return None


_PREFIX_LEAVES = ("cls_token", "class_token", "dist_token", "distillation_token")


def declared_prefix_tokens(model: nn.Module) -> int:
    """Class, distillation and register tokens declared as parameters (``cls_token``, ``register_tokens``...)."""
    count = 0
    for n, p in model.named_parameters():
        leaf = n.rsplit(".", 1)[-1].lower()
        if leaf in _PREFIX_LEAVES or leaf.startswith(("register_token", "reg_token")):
            count += int(p.shape[-2]) if p.ndim >= 2 else 1
    return count
