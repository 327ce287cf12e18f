"""Small test architectures with random weights, shared by the attribution and health-diagnostic tests.

``EEGNeXLike`` re-implements braindecode's ``EEGNeX`` (braindecode cannot be imported in this environment):
same blocks, kernel sizes, dilations, pooling, max-norm constraints and module layout (``block_1`` ... ``block_5``,
``final_layer``), so layer names such as ``block_5.0`` match the real model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TinyConv1d", "EEGNeXLike", "SmallResNet2d", "Conv2dWithConstraint", "LinearWithConstraint"]


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


class _Rearrange(nn.Module):
    """einops ``Rearrange("batch ch time -> batch 1 ch time")``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.unsqueeze(1)


class Conv2dWithConstraint(nn.Conv2d):
    """braindecode's ``Conv2dWithConstraint``: each output filter's weights are renormed to ``max_norm`` in forward."""

    def __init__(self, *args, max_norm: float = 1.0, **kwargs) -> None:  # noqa: ANN002, ANN003
        self.max_norm = max_norm
        super().__init__(*args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        self.weight.data = torch.renorm(self.weight.data, p=2, dim=0, maxnorm=self.max_norm)
        return super().forward(x)


class LinearWithConstraint(nn.Linear):
    """braindecode's ``LinearWithConstraint`` (EEGNeX's final layer, ``max_norm=0.25``)."""

    def __init__(self, *args, max_norm: float = 0.25, **kwargs) -> None:  # noqa: ANN002, ANN003
        self.max_norm = max_norm
        super().__init__(*args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        self.weight.data = torch.renorm(self.weight.data, p=2, dim=0, maxnorm=self.max_norm)
        return super().forward(x)


class EEGNeXLike(nn.Module):
    """braindecode ``EEGNeX`` (Chen et al. 2024) for ``(B, n_chans, n_times)`` inputs and ``(B, n_outputs)`` outputs."""

    def __init__(self, n_chans: int = 129, n_times: int = 200, n_outputs: int = 1, filter_1: int = 8,
                 filter_2: int = 32, depth_multiplier: int = 2, kernel_block_1_2: int = 64, kernel_block_4: int = 16,
                 dilation_block_4: int = 2, avg_pool_block4: int = 4, kernel_block_5: int = 16,
                 dilation_block_5: int = 4, avg_pool_block5: int = 8, drop_prob: float = 0.5,
                 max_norm_conv: float = 1.0, max_norm_linear: float = 0.25) -> None:
        super().__init__()
        self.n_chans, self.n_times, self.n_outputs = n_chans, n_times, n_outputs
        filter_3 = filter_2 * depth_multiplier
        self.block_1 = nn.Sequential(
            _Rearrange(),
            nn.Conv2d(1, filter_1, kernel_size=(1, kernel_block_1_2), padding="same", bias=False),
            nn.BatchNorm2d(filter_1),
        )
        self.block_2 = nn.Sequential(
            nn.Conv2d(filter_1, filter_2, kernel_size=(1, kernel_block_1_2), padding="same", bias=False),
            nn.BatchNorm2d(filter_2),
        )
        self.block_3 = nn.Sequential(
            Conv2dWithConstraint(filter_2, filter_3, kernel_size=(n_chans, 1), groups=filter_2, bias=False,
                                 max_norm=max_norm_conv),
            nn.BatchNorm2d(filter_3),
            nn.ELU(),
            nn.AvgPool2d(kernel_size=(1, avg_pool_block4), padding=(0, 1)),
            nn.Dropout(drop_prob),
        )
        self.block_4 = nn.Sequential(
            nn.Conv2d(filter_3, filter_2, kernel_size=(1, kernel_block_4), dilation=(1, dilation_block_4),
                      padding="same", bias=False),
            nn.BatchNorm2d(filter_2),
        )
        self.block_5 = nn.Sequential(
            nn.Conv2d(filter_2, filter_1, kernel_size=(1, kernel_block_5), dilation=(1, dilation_block_5),
                      padding="same", bias=False),
            nn.BatchNorm2d(filter_1),
            nn.ELU(),
            nn.AvgPool2d(kernel_size=(1, avg_pool_block5), padding=(0, 1)),
            nn.Dropout(drop_prob),
            nn.Flatten(),
        )
        t1 = (n_times + 2 - avg_pool_block4) // avg_pool_block4 + 1
        t2 = (t1 + 2 - avg_pool_block5) // avg_pool_block5 + 1
        self.in_features = filter_1 * t2
        self.final_layer = LinearWithConstraint(self.in_features, n_outputs, max_norm=max_norm_linear)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block_1(x)
        x = self.block_2(x)
        x = self.block_3(x)
        x = self.block_4(x)
        x = self.block_5(x)
        return self.final_layer(x)


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
