"""Token-id inputs (BERT-style text models): attribute at the input embedding's output, perturb with a token id.

Integer inputs cannot carry gradients, so gradient methods attribute at the output of the embedding layer that
consumes the ids, as Captum's ``LayerIntegratedGradients(model, model.get_input_embeddings())`` does: the model
still runs on the real ids (so masks or positions derived from them are unchanged), and a forward hook replaces
the embedding's output with the float tensor being attributed. :class:`TokenForward` is that hook as a forward
function ``(embeddings, ids, index) -> (B,)`` scalars, so every gradient method of cerebro (and Captum's) sees an
ordinary float input ``(B, T, D)``; maps are summed over ``D`` to one value per token ``(B, T)``.

Perturbation methods (occlusion, feature ablation) stay on the ids and replace tokens by a baseline token id.
The baseline token is ``tokens.baseline``: ``pad`` (the Hugging Face config's ``pad_token_id``, else the
embedding's ``padding_idx``), ``mask`` (the config's ``mask_token_id``), a token id, or ``zeros`` (the zero
embedding; gradient methods only).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from cerebro.errors import CerebroConfigError, choice_error
from cerebro.plain import to_plain

__all__ = ["TokenOptions", "build_token_options", "is_token_input", "find_embedding", "special_ids",
           "TokenArgs", "TokenForward", "TokenInputs", "detect_tokens"]

_BASELINES = ("pad", "mask", "zeros")


@dataclass(frozen=True)
class TokenOptions:
    """How token-id inputs are handled (the autopsy's ``tokens`` option)."""

    #: auto (HF ``get_input_embeddings()``, else the first ``nn.Embedding`` fed the ids) or a dotted module name.
    embedding: str = "auto"
    #: pad | mask | zeros | a token id: the gradient baseline (its embedding at every position) and the token
    #: perturbation methods put in place of the removed ones.
    baseline: str | int = "pad"
    #: Also store the per-dimension maps ``(N, T, D)`` as ``attributions_per_dimension.npy``.
    per_dimension: bool = False


def build_token_options(spec: Any) -> TokenOptions:
    """Validate the ``tokens`` option (``None`` or a mapping of :class:`TokenOptions` fields)."""
    spec = to_plain(spec, "tokens")
    if spec is None:
        return TokenOptions()
    if isinstance(spec, TokenOptions):
        return spec
    if not isinstance(spec, Mapping):
        raise CerebroConfigError(f"`tokens` must be a mapping with keys embedding, baseline, per_dimension, got {spec!r}")
    allowed = ("embedding", "baseline", "per_dimension")
    for key in spec:
        if key not in allowed:
            raise choice_error("tokens option", key, allowed)
    opts = TokenOptions(**dict(spec))
    if not isinstance(opts.embedding, str) or not opts.embedding:
        raise CerebroConfigError(f"`tokens.embedding` must be 'auto' or a dotted module name, got {opts.embedding!r}")
    b = opts.baseline
    if isinstance(b, bool) or not (b in _BASELINES or (isinstance(b, int) and b >= 0)):
        raise CerebroConfigError(f"`tokens.baseline` can be {list(_BASELINES)} or a token id (int >= 0), got {b!r}")
    if not isinstance(opts.per_dimension, bool):
        raise CerebroConfigError(f"`tokens.per_dimension` must be a bool, got {opts.per_dimension!r}")
    return opts


def is_token_input(x: Any) -> bool:
    """Integer inputs (not bool): token ids or other categorical codes."""
    dtype = getattr(x, "dtype", None)
    return isinstance(dtype, torch.dtype) and not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def _calls(model: nn.Module, modules: dict[str, nn.Module], ids: Tensor) -> list[tuple[str, Tensor | None]]:
    """``(name, first input)`` of each call of ``modules`` during ``model(ids)``, in call order."""
    seen: list[tuple[str, Tensor | None]] = []
    handles = [m.register_forward_hook(
        lambda _m, i, _o, _n=n: seen.append((_n, i[0] if i and isinstance(i[0], Tensor) else None)))
        for n, m in modules.items()]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in handles:
            h.remove()
    return seen


def _hf_embedding(model: nn.Module) -> nn.Module | None:
    """``get_input_embeddings()`` of the model or of its first submodule that has one (a wrapped HF model)."""
    for module in model.modules():
        getter = getattr(module, "get_input_embeddings", None)
        if callable(getter):
            try:
                emb = getter()
            except (NotImplementedError, AttributeError):
                continue
            if isinstance(emb, nn.Module):
                return emb
    return None


def find_embedding(model: nn.Module, ids: Tensor, name: str = "auto") -> tuple[str, nn.Module]:
    """The input embedding layer of a token model: ``name``, or the HF ``get_input_embeddings()``, or the first
    ``nn.Embedding`` called on the ids; verified with a forward hook on ``ids`` (it must be fed them, once)."""
    names = {id(m): n for n, m in model.named_modules()}
    if name != "auto":
        modules = dict(model.named_modules())
        if name not in modules:
            embs = [n for n, m in modules.items() if isinstance(m, nn.Embedding)]
            raise CerebroConfigError(f"tokens.embedding {name!r} is not a submodule of {type(model).__name__}; "
                                     f"nn.Embedding layers: {embs}")
        candidates = {name: modules[name]}
    else:
        hf = _hf_embedding(model)
        candidates = {names[id(hf)]: hf} if hf is not None and id(hf) in names else {}
        candidates.update({n: m for n, m in model.named_modules() if isinstance(m, nn.Embedding)})
    calls = _calls(model, candidates, ids)
    fed = [n for n, i in calls if i is not None and i.shape == ids.shape and torch.equal(i.to(ids.device), ids)]
    if not fed:
        raise CerebroConfigError(
            f"the inputs are integer ids (dtype {ids.dtype}), but no embedding layer of {type(model).__name__} is "
            f"called on them{'' if name == 'auto' else f' ({name!r} is not)'}; gradient methods attribute at the "
            f"embedding that consumes the ids: set tokens.embedding to its dotted name, or feed float inputs. "
            f"nn.Embedding layers: {[n for n, m in model.named_modules() if isinstance(m, nn.Embedding)][:12]}")
    chosen = fed[0]
    count = sum(1 for n, _ in calls if n == chosen)
    if count != 1:
        raise CerebroConfigError(
            f"embedding {chosen!r} is called {count} times per forward pass; attributing at its output needs one "
            "call: set tokens.embedding to the layer that embeds the input ids only once")
    return chosen, candidates[chosen]


def special_ids(model: nn.Module, embedding: nn.Module) -> dict[str, Any]:
    """``{pad, mask, source}``: pad/mask token ids from a Hugging Face config (``pad_token_id``,
    ``mask_token_id``), else the embedding's ``padding_idx``; ``None`` where unknown."""
    found: dict[str, Any] = {"pad": None, "mask": None, "source": {}}
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if cfg is None or isinstance(cfg, Mapping):
            continue
        for key in ("pad", "mask"):
            value = getattr(cfg, f"{key}_token_id", None)
            if found[key] is None and isinstance(value, int) and not isinstance(value, bool):
                found[key], found["source"][key] = value, f"{type(cfg).__name__}.{key}_token_id"
    pad_idx = getattr(embedding, "padding_idx", None)
    if found["pad"] is None and isinstance(pad_idx, int):
        found["pad"], found["source"]["pad"] = pad_idx, f"{type(embedding).__name__}.padding_idx"
    return found


@dataclass
class TokenArgs:
    """Per-sample arguments of :class:`TokenForward` (ids and the target's index), indexable like a tensor, so
    the batched IG engine selects them per interpolation point as it does a plain target index."""

    ids: Tensor
    index: Tensor | None = None

    def __getitem__(self, i: Any) -> TokenArgs:
        return TokenArgs(self.ids[i], None if self.index is None else self.index[i])

    def to(self, device: Any) -> TokenArgs:
        return TokenArgs(self.ids.to(device), None if self.index is None else self.index.to(device))


@contextmanager
def replaced_output(module: nn.Module, value: Tensor) -> Iterator[None]:
    """``module`` returns ``value`` instead of its output while the block runs (hook removed on exit). Prepended,
    so hooks of Captum's layer methods on the same module see ``value``."""
    def hook(_m: nn.Module, _i: Any, out: Any) -> Tensor:
        if isinstance(out, Tensor) and out.shape != value.shape:
            raise CerebroConfigError(f"the embedding output {tuple(out.shape)} does not match the attributed "
                                     f"embeddings {tuple(value.shape)}")
        return value.to(out.dtype) if isinstance(out, Tensor) else value

    handle = module.register_forward_hook(hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()


class TokenForward(nn.Module):
    """``forward(embeddings, ids, index=None) -> (B,)``: the model run on ``ids`` with the output of its embedding
    layer ``name`` replaced by ``embeddings`` (``(B, T, D)`` floats), followed by the target adapter."""

    def __init__(self, model: nn.Module, adapter: Any, name: str) -> None:
        super().__init__()
        self.model = model
        self.adapter = adapter
        self.name = name

    def forward(self, emb: Tensor, ids: Tensor | TokenArgs, index: Tensor | None = None) -> Tensor:
        if isinstance(ids, TokenArgs):
            ids, index = ids.ids, ids.index
        with replaced_output(self.model.get_submodule(self.name), emb):
            return self.adapter.select(self.model(ids), index)


class TokenInputs:
    """The token-id view of the samples: embedding layer, special ids, options; ``error`` when no embedding
    consumes the ids (gradient methods then fail with it, perturbation methods still run)."""

    def __init__(self, options: TokenOptions, name: str | None = None, dim: int | None = None,
                 ids: dict[str, Any] | None = None, error: str | None = None) -> None:
        self.options, self.name, self.dim, self.error = options, name, dim, error
        self.pad, self.mask = (ids or {}).get("pad"), (ids or {}).get("mask")
        self.sources = (ids or {}).get("source", {})

    def check(self) -> None:
        if self.error is not None:
            raise CerebroConfigError(self.error)

    def forward(self, model: nn.Module, adapter: Any) -> TokenForward:
        self.check()
        assert self.name is not None
        return TokenForward(model, adapter, self.name)

    def embed(self, model: nn.Module, ids: Tensor) -> Tensor:
        """The embedding layer's output on ``ids`` (captured from the model's own forward pass, as Captum's
        layer methods do), detached, ``(B, T, D)``."""
        self.check()
        held: list[Tensor] = []
        module = model.get_submodule(self.name)
        handle = module.register_forward_hook(lambda _m, _i, o: held.append(o.detach()))
        try:
            with torch.no_grad():
                model(ids)
        finally:
            handle.remove()
        return held[0].float() if not held[0].is_floating_point() else held[0]

    def baseline_id(self, owner: str) -> int:
        """The token id put in place of removed tokens; ``owner`` names the diagnostic in errors."""
        b = self.options.baseline
        if isinstance(b, int):
            return b
        if b == "zeros":
            raise CerebroConfigError(f"{owner} replaces tokens by a token id, but tokens.baseline is 'zeros' (an "
                                     "embedding, not an id): set tokens.baseline to pad, mask or a token id")
        value = self.pad if b == "pad" else self.mask
        if value is None:
            where = ("no pad_token_id in the model's config and no padding_idx on its embedding" if b == "pad"
                     else "no mask_token_id in the model's config")
            raise CerebroConfigError(f"{owner}: tokens.baseline is {b!r} but the model declares no {b} token ({where}); "
                                     f"set tokens.baseline to a token id (e.g. tokens.baseline: 0) or zeros")
        return int(value)

    def baseline(self, model: nn.Module, ids: Tensor, owner: str) -> Tensor:
        """Gradient baseline ``(1, T, D)``: the baseline token's embedding at every position (from the model's
        forward on a row of that token), or the zero embedding."""
        row = ids[:1]
        if self.options.baseline == "zeros":
            return torch.zeros_like(self.embed(model, row))
        return self.embed(model, torch.full_like(row, self.baseline_id(owner)))

    def per_token(self, attr: Tensor) -> dict[str, Tensor]:
        """``{"attributions": (B, T)}`` summed over the embedding dimension, plus the ``(B, T, D)`` maps when
        ``per_dimension`` is on."""
        out = {"attributions": attr.sum(dim=-1)}
        if self.options.per_dimension:
            out["attributions_per_dimension"] = attr
        return out

    def describe(self) -> dict[str, Any]:
        b = self.options.baseline
        base_id: Any = None
        if b != "zeros":
            try:
                base_id = self.baseline_id("tokens")
            except CerebroConfigError:
                base_id = None
        return {"embedding": self.name, "embedding_dim": self.dim, "pad_token_id": self.pad,
                "mask_token_id": self.mask, "id_sources": self.sources, "baseline": b, "baseline_token_id": base_id,
                "per_dimension": self.options.per_dimension, "error": self.error}


def detect_tokens(model: nn.Module, probe: Tensor, options: TokenOptions) -> TokenInputs | None:
    """``None`` for float inputs; else the :class:`TokenInputs` of ``model`` found on ``probe`` (a few samples)."""
    if not is_token_input(probe):
        return None
    try:
        name, module = find_embedding(model, probe, options.embedding)
    except CerebroConfigError as err:
        return TokenInputs(options, error=str(err))
    held: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, o: held.append(o))
    try:
        with torch.no_grad():
            model(probe)
    finally:
        handle.remove()
    out = held[0] if held and isinstance(held[0], Tensor) else None
    if out is None or out.ndim != probe.ndim + 1 or tuple(out.shape[: probe.ndim]) != tuple(probe.shape):
        shape = None if out is None else tuple(out.shape)
        return TokenInputs(options, name, error=f"embedding {name!r} outputs {shape} for ids {tuple(probe.shape)}; "
                                                "expected one vector per id (B, T, D): set tokens.embedding")
    return TokenInputs(options, name, int(out.shape[-1]), special_ids(model, module))
