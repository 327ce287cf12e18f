"""Resolve which weights the autopsy studies and load them into a private copy of the module."""

from __future__ import annotations

import copy
import hashlib
import inspect
import os
import warnings
import zipfile
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from cerebro.errors import CerebroConfigError

__all__ = ["CheckpointInfo", "resolve_checkpoint", "load_checkpoint", "load_state_dict", "matching_state_dict", "prepare_model", "check_single_input", "sha256_file", "CHECKPOINT_CHOICES"]

CHECKPOINT_CHOICES = ("best", "last", "live")


@dataclass
class CheckpointInfo:
    """What ``summary.json`` records under ``checkpoint``."""

    source: str
    path: str | None = None
    sha256: str | None = None
    fallback_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_checkpoint(trainer: Any, choice: str) -> CheckpointInfo:
    """Turn ``best`` / ``last`` / ``live`` / a path into a :class:`CheckpointInfo`, falling back to ``live`` with a reason."""
    if choice == "live":
        return CheckpointInfo(source="live")
    if choice not in ("best", "last"):
        return CheckpointInfo(source="path", path=str(choice))
    reason = None
    if trainer is None:
        reason = "no Trainer is attached"
    elif getattr(trainer, "fast_dev_run", False):
        reason = "fast_dev_run disables checkpointing"
    elif not getattr(trainer, "checkpoint_callbacks", []):
        reason = "the Trainer has no ModelCheckpoint callback (enable_checkpointing=False or none configured)"
    else:
        cb = trainer.checkpoint_callback
        path = cb.best_model_path if choice == "best" else cb.last_model_path
        if not path:
            reason = (
                "ModelCheckpoint recorded no best checkpoint (save_top_k=0, or no checkpoint was saved)"
                if choice == "best"
                else "ModelCheckpoint saved no last checkpoint (set save_last=True)"
            )
        elif not os.path.isfile(path):
            reason = f"the {choice} checkpoint {path} no longer exists"
        else:
            return CheckpointInfo(source=choice, path=str(path))
    return CheckpointInfo(source="live", fallback_reason=f"checkpoint={choice!r} unavailable: {reason}; used the live module")


def _safe_globals() -> list[Any]:
    """Plain-data OmegaConf containers that Lightning stores in ``hyper_parameters`` (no code runs on load)."""
    try:
        import typing

        from omegaconf import DictConfig, ListConfig
        from omegaconf.base import ContainerMetadata, Metadata
        from omegaconf.nodes import AnyNode, BooleanNode, FloatNode, IntegerNode, StringNode
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return []
    import collections

    return [DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, BooleanNode, FloatNode, IntegerNode,
            StringNode, typing.Any, dict, list, int, collections.defaultdict]


def load_checkpoint(path: str | os.PathLike[str], weights_only: bool = True) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` allowing only OmegaConf data containers besides tensors.

    ``weights_only=False`` (the ``weights_only: false`` option) unpickles anything, which runs code named in the
    file: only for checkpoints you made or trust."""
    if os.path.isdir(path):
        raise CerebroConfigError(f"checkpoint {str(path)!r} is a directory (a sharded or DeepSpeed checkpoint?); "
                                 "cerebro loads one checkpoint file: convert it to a single .ckpt/.pt first")
    if not os.path.isfile(path):
        raise CerebroConfigError(f"checkpoint file {str(path)!r} does not exist")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(2)
    # torch.save writes a zip archive (legacy files: a pickle, which starts with the PROTO opcode 0x80). Anything
    # else is not a checkpoint; torch's own message would then suggest weights_only=False, which cannot help.
    if size == 0 or not (zipfile.is_zipfile(path) or head[:1] == b"\x80"):
        raise CerebroConfigError(
            f"checkpoint {str(path)!r} ({size} bytes) is not a PyTorch checkpoint: neither a torch.save zip archive "
            "nor a pickle. The file is empty, truncated, corrupt or of another format; save it again with "
            "trainer.save_checkpoint / torch.save"
        )
    if not weights_only:
        warnings.warn(f"cerebro: loading {str(path)!r} with weights_only=False: unpickling runs code named in the "
                      "file; use this only for checkpoints you trust", stacklevel=2)
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(ckpt, dict):
            raise CerebroConfigError(f"checkpoint {str(path)!r} holds a {type(ckpt).__name__}, expected a dict")
        return ckpt
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError for corrupt zip, ...
        # torch's message opens with advice about weights_only=False; the cause is after "WeightsUnpickler error:".
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()] or [""]
        at = next((i for i, ln in enumerate(lines) if "WeightsUnpickler error:" in ln), None)
        if at is None:
            detail = lines[0]
        else:
            cause = lines[at].split("WeightsUnpickler error:", 1)[1].strip() or " ".join(lines[at + 1 : at + 2])
            detail = f"WeightsUnpickler error: {cause}"
        raise CerebroConfigError(
            f"cannot load checkpoint {str(path)!r} with weights_only=True: {type(err).__name__}: {detail}. If the "
            "file is yours and holds other objects, set weights_only: false (unpickling runs code named in the file)"
        ) from err
    if not isinstance(ckpt, dict):
        raise CerebroConfigError(f"checkpoint {str(path)!r} holds a {type(ckpt).__name__}, expected a dict or a state_dict")
    return ckpt


def load_state_dict(path: str | os.PathLike[str], weights_only: bool = True) -> dict[str, torch.Tensor]:
    """The model weights of a Lightning checkpoint (``state_dict`` entry) or of a bare ``state_dict`` file."""
    ckpt = load_checkpoint(path, weights_only)
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CerebroConfigError(f"checkpoint {str(path)!r} has no `state_dict` of tensors (keys: {sorted(ckpt)[:8]})")
    return state


def _match_prefix(state: dict[str, torch.Tensor], wanted: set[str]) -> dict[str, torch.Tensor] | None:
    """A LightningModule checkpoint loaded into its inner ``nn.Module``: strip one leading ``name.`` prefix."""
    prefixes = {k.split(".", 1)[0] for k in state if "." in k}
    for p in prefixes:
        stripped = {k[len(p) + 1 :]: v for k, v in state.items() if k.startswith(p + ".")}
        if set(stripped) == wanted:
            return stripped
    return None


def matching_state_dict(model: nn.Module, checkpoint_path: str, weights_only: bool = True) -> dict[str, torch.Tensor]:
    """The checkpoint's weights, checked key by key and shape by shape against ``model``.

    Raises:
        CerebroConfigError: the file is missing/corrupt, or its weights do not belong to this class.
    """
    state = load_state_dict(checkpoint_path, weights_only)
    target = model.state_dict()
    wanted = set(target)
    if set(state) != wanted:
        state = _match_prefix(state, wanted) or state
    missing = sorted(wanted - set(state))
    unexpected = sorted(set(state) - wanted)
    wrong = sorted(k for k in wanted & set(state) if tuple(state[k].shape) != tuple(target[k].shape))
    if missing or unexpected or wrong:
        def few(keys: list[str]) -> str:
            return f"{keys[:5]}{' ...' if len(keys) > 5 else ''}"

        detail = ", ".join(part for part in (
            f"missing keys {few(missing)}" if missing else "",
            f"unexpected keys {few(unexpected)}" if unexpected else "",
            "shape mismatch " + ", ".join(f"{k}: {tuple(state[k].shape)} vs {tuple(target[k].shape)}" for k in wrong[:5])
            if wrong else "",
        ) if part)
        raise CerebroConfigError(f"checkpoint {checkpoint_path!r} does not match {type(model).__name__}: {detail}")
    return state


def check_single_input(model: nn.Module) -> None:
    """Every pass calls ``model(x)`` with one tensor: a forward that needs more inputs gets a clear error first."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # no introspectable signature: let the forward pass speak for itself
        return
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return
    required = [p.name for p in params if p.default is p.empty and p.kind is not p.VAR_KEYWORD]
    if len(required) > 1:
        raise CerebroConfigError(
            f"{type(model).__name__}.forward needs {len(required)} inputs {required}, but cerebro calls forward(x) "
            "with one tensor (the batch field chosen by input_key); wrap the model in an nn.Module whose forward(x) "
            "takes a single tensor, or give the other inputs default values"
        )


def prepare_model(model: nn.Module, checkpoint_path: str | None, device: torch.device,
                  weights_only: bool = True) -> nn.Module:
    """A private copy of ``model`` (weights from ``checkpoint_path`` when given) on ``device``, in eval mode.

    The caller's module is never modified. Must run with autograd allowed (outside ``inference_mode``), otherwise
    the copy's parameters would be inference tensors.
    """
    check_single_input(model)
    work = copy.deepcopy(model)
    if checkpoint_path is not None:
        work.load_state_dict(matching_state_dict(work, checkpoint_path, weights_only), strict=True)
    return work.to(device).eval()
