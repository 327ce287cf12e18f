"""Model-family knowledge: how to find token layers, embeddings, attention weights and outputs of each family.

One small file per family (:mod:`~cerebro.adapters.hf` for Hugging Face ``transformers``,
:mod:`~cerebro.adapters.timm`, :mod:`~cerebro.adapters.torch_nn` for ``torch.nn`` transformer layers,
:mod:`~cerebro.adapters.cnn` for convolutional networks, :mod:`~cerebro.adapters.tokens` for token-id inputs).
The functions below ask every family that recognises the model, so diagnostics stay generic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from torch import Tensor, nn

from cerebro.adapters.base import ModelAdapter, declared_prefix_tokens, square_weights
from cerebro.adapters.cnn import conv_layers, main_path_convs
from cerebro.adapters.hf import HuggingFace
from cerebro.adapters.timm import Timm
from cerebro.adapters.torch_nn import TorchTransformer

__all__ = ["ADAPTERS", "ModelAdapter", "adapters_for", "token_blocks", "prefix_tokens", "hidden_sizes",
           "is_sequence_model", "attention_modules", "attention_pass", "attention_weights", "weights_hint",
           "output_key", "conv_layers", "main_path_convs", "declared_prefix_tokens", "square_weights"]

#: Every known family, most specific first.
ADAPTERS: tuple[ModelAdapter, ...] = (HuggingFace(), Timm(), TorchTransformer())


def adapters_for(model: nn.Module) -> list[ModelAdapter]:
    """The families that recognise ``model`` (a model may mix several, e.g. a timm backbone in a LightningModule)."""
    return [a for a in ADAPTERS if a.matches(model)]


def token_blocks(model: nn.Module) -> list[str]:
    """Dotted names of the model's transformer blocks (tokens in, tokens out), in registration order."""
    names = {n for a in adapters_for(model) for n in a.token_blocks(model)}
    return [n for n, _ in model.named_modules() if n in names]


def prefix_tokens(model: nn.Module) -> int:
    """Class/register/distillation tokens before the patch tokens: the family's own count, else the token
    parameters the model declares (``cls_token``, ``register_tokens``, ...)."""
    for a in adapters_for(model):
        count = a.prefix_tokens(model)
        if count is not None:
            return count
    return declared_prefix_tokens(model)


def hidden_sizes(model: nn.Module) -> set[int]:
    """Token widths ``D`` the families know for this model (``hidden_size``, ``embed_dim``, ...), plus the widths
    of its ``nn.Embedding`` tables."""
    sizes = {s for a in adapters_for(model) for s in a.hidden_sizes(model)}
    return sizes | {int(m.embedding_dim) for m in model.modules() if isinstance(m, nn.Embedding)}


def is_sequence_model(model: nn.Module) -> bool:
    """Whether the model passes tokens ``(B, N, D)`` between its layers (transformer blocks or embeddings)."""
    return bool(token_blocks(model)) or any(isinstance(m, nn.Embedding) for m in model.modules())


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules whose output holds attention probabilities during :func:`attention_pass`, in registration order."""
    found = {n: m for a in adapters_for(model) for n, m in a.attention_modules(model).items()}
    return {n: m for n, m in model.named_modules() if n in found}


@contextmanager
def attention_pass(model: nn.Module) -> Iterator[None]:
    """Every family's switch to weight-exposing attention for the block, restored on exit."""
    with ExitStack() as stack:
        for a in adapters_for(model):
            stack.enter_context(a.attention_pass(model))
        yield


def attention_weights(model: nn.Module, module: nn.Module, output: Any) -> Tensor | None:
    """``(B, heads, N, N)`` probabilities in ``module``'s output, as the model's families read them."""
    for a in adapters_for(model) or [ModelAdapter()]:
        w = a.attention_weights(module, output)
        if w is not None:
            return w
    return None


def weights_hint(model: nn.Module) -> str:
    """How to make this model's attention weights visible (for error messages)."""
    hints = [h for a in adapters_for(model) if (h := a.weights_hint())]
    return "; ".join(hints) or ('Hugging Face models: attn_implementation="eager"; timm: fused_attn = False; '
                               "attention computed inside F.scaled_dot_product_attention exposes no weights")


def output_key(model: nn.Module, output: Any) -> str | None:
    """The field of a structured output that holds the prediction when a family knows it (``logits``)."""
    for a in adapters_for(model):
        key = a.output_key(output)
        if key is not None:
            return key
    return None
