"""Train-time image augmentation on the worker, on whole batches of tensors (on the GPU
when there is one): random horizontal flips and random crops of the zero-padded image
(zero is the training mean once the images are normalised). The draws come from torch's
generator, which the loop reseeds from the position, so a resume draws the same crops."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from deeprig.spec.data import AugmentSpec

Augment = Callable[[torch.Tensor], torch.Tensor]


def image_augment(spec: AugmentSpec) -> Augment | None:
    """The batch transform a spec asks for, or None."""
    if not spec.flip and spec.crop_padding == 0:
        return None

    def augment(images: torch.Tensor) -> torch.Tensor:  # (batch, channels, height, width)
        if spec.crop_padding:
            images = random_crop(images, spec.crop_padding)
        if spec.flip:
            images = random_flip(images)
        return images

    return augment


def random_flip(images: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(len(images), device="cpu").to(images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(dims=[3]), images)


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Each image cut back to its size from a random offset of its padded self."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (batch,), device="cpu").to(images.device)
    left = torch.randint(0, 2 * padding + 1, (batch,), device="cpu").to(images.device)
    rows = (top[:, None] + torch.arange(height, device=images.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(width, device=images.device))[:, None, None, :]
    index = torch.arange(batch, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[index, channel, rows, cols]
