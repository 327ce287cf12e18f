"""A re-implementation of braindecode's ``EEGNeX`` (Chen et al. 2024) for benchmarks and tests.

braindecode does not import beside the CPU build of torch this project tests with (its torchaudio needs CUDA
libraries), so this module mirrors ``braindecode.models.EEGNeX`` 1.8: same blocks, kernel sizes, dilations,
pooling, max-norm constraints applied in ``forward`` and module layout (``block_1`` ... ``block_5``,
``final_layer``), so layer names such as ``block_5.0`` match the real model. Weights are random.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["EEGNeX", "Conv2dWithConstraint", "LinearWithConstraint"]


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


class EEGNeX(nn.Module):
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
