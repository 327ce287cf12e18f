"""Convolutional networks (torchvision ResNets, braindecode EEG models, timm CNNs): which convolutions carry the
main path, so that ``layer: auto`` never lands on a residual shortcut."""

from __future__ import annotations

from torch import nn

__all__ = ["CONV_TYPES", "SHORTCUTS", "conv_layers", "main_path_convs"]

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: Module names of residual shortcut branches (torchvision ``downsample``, timm/others ``shortcut``, ``skip``).
SHORTCUTS = {"shortcut", "downsample", "skip", "skip_connection"}


def conv_layers(model: nn.Module) -> list[str]:
    """Dotted names of every Conv1d/2d/3d, in registration order."""
    return [n for n, m in model.named_modules() if isinstance(m, CONV_TYPES)]


def main_path_convs(model: nn.Module) -> list[str]:
    """Convolutions outside residual shortcut branches (a ResNet block registers its 1x1 shortcut after conv2)."""
    convs = conv_layers(model)
    return [n for n in convs if not SHORTCUTS & set(n.split("."))] or convs
