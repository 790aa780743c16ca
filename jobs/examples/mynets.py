"""A small residual CNN, written as any PyTorch user would: nothing here knows deeprig.

deeprig fills `num_outputs` and `input_shape` from the data because the constructor takes
parameters of those names; `width` and `blocks` come from the spec's `model.args`.
"""

from __future__ import annotations

from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
        )
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(x + self.body(x))


class SmallResNet(nn.Module):
    def __init__(
        self,
        num_outputs: int,
        input_shape: tuple[int, ...],
        width: int = 16,
        blocks: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        channels = input_shape[0] if len(input_shape) == 3 else 1
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(width, num_outputs),
        )

    def forward(self, x):
        if x.dim() == 3:  # (batch, H, W): one grey channel
            x = x.unsqueeze(1)
        return self.head(self.blocks(self.stem(x)))
