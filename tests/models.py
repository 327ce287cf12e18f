"""Small test architectures with random weights, shared by the attribution and health-diagnostic tests.

``EEGNeXLike`` re-implements braindecode's ``EEGNeX`` (braindecode cannot be imported in this environment):
same blocks, kernel sizes, dilations, pooling, max-norm constraints and module layout (``block_1`` ... ``block_5``,
``final_layer``), so layer names such as ``block_5.0`` match the real model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TinyConv1d", "EEGNeXLike", "SmallResNet2d", "Conv2dWithConstraint", "LinearWithConstraint", "PassThrough"]

# The EEGNeX re-implementation lives in the package (benchmarks use it too).
from cerebro.demo.eegnex import Conv2dWithConstraint, LinearWithConstraint  # noqa: E402
from cerebro.demo.eegnex import EEGNeX as EEGNeXLike  # noqa: E402


class TinyConv1d(nn.Module):
    """``(B, C, T) -> (B, 1)``: two Conv1d layers (the second with stride 2, so its map has ``T // 2`` steps)."""

    def __init__(self, n_chans: int = 4, n_times: int = 32, hidden: int = 6) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_chans, hidden, kernel_size=5, padding=2)
        self.act1 = nn.ELU()
        self.conv2 = nn.Conv1d(hidden, hidden, kernel_size=5, stride=2, padding=2)
        self.act2 = nn.ELU()
        self.flatten = nn.Flatten()
        self.head = nn.Linear(hidden * ((n_times + 1) // 2), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.flatten(self.act2(self.conv2(self.act1(self.conv1(x))))))


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out
                         else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)))
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(h + self.shortcut(x))


class SmallResNet2d(nn.Module):
    """``(B, C, H, W) -> (B, n_classes)`` logits: conv stem and two residual blocks (the second halves H and W)."""

    def __init__(self, in_chans: int = 3, n_classes: int = 4, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = _ResBlock(width, width)
        self.layer2 = _ResBlock(width, 2 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2 * width, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.pool(self.layer2(self.layer1(self.stem(x))))))


class PassThrough(nn.Module):
    """``forward(x) = x * scale`` with ``scale == 1``: the input encodes the output (a parameter gives a device)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class SubjectWindows(torch.utils.data.Dataset):
    """EEG-like windows (4 channels x 32 samples, seeded) as dict batches with a subject per window (metadata)."""

    def __init__(self, n: int = 24) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 4, 32, generator=g), torch.randn(n, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "subject": f"sub-{i % 3}"}
