"""Conv blocks (conv -> [batch norm] -> ReLU -> 2x2 max-pool while the image is big enough),
then a dense head."""

from __future__ import annotations

from torch import Tensor, nn

from deeprig.models.shapes import as_image


class CNN(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        channels: list[int],
        kernel_size: int = 3,
        hidden: int = 64,
        dropout: float = 0.0,
        batch_norm: bool = True,
    ):
        super().__init__()
        self.image_shape = as_image(input_shape)
        in_ch, height, width = self.image_shape
        blocks: list[nn.Module] = []
        for out_ch in channels:
            blocks.append(nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2))
            if batch_norm:
                blocks.append(nn.BatchNorm2d(out_ch))
            blocks.append(nn.ReLU())
            if min(height, width) >= 4:  # pool only while there is something left to pool
                blocks.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_ch * height * width, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_outputs),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], *self.image_shape)
        return self.head(self.features(x))
