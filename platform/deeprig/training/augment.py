"""Train-time augmentation on the worker, on whole batches of tensors (on the GPU when
there is one): random horizontal flips and random crops of the zero-padded image (zero is
the training mean once the images are normalised); a spectrogram's random time and
frequency masks (SpecAugment's, set to zero: the band's training mean). The draws come
from torch's generator, which the loop reseeds from the position, so a resume draws the
same crops and masks."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from deeprig.spec.data import AudioData, AugmentSpec, ImagesData

Augment = Callable[[torch.Tensor], torch.Tensor]


def batch_augment(data: object) -> Augment | None:
    """The training batches' transform a data spec asks for, or None."""
    if isinstance(data, ImagesData):
        return image_augment(data.augment)
    if isinstance(data, AudioData):
        return spectrogram_masks(data)
    return None


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


def spectrogram_masks(spec: AudioData) -> Augment | None:
    """Masks of up to `time_mask` frames and `freq_mask` mel bands per clip, where the
    `view` lays them out: (batch, frames, mels) or (batch, 1, mels, frames)."""
    masks = spec.masking
    if masks.time_mask == 0 and masks.freq_mask == 0:
        return None
    time_axis, band_axis = (1, 2) if spec.view == "frames" else (3, 2)

    def augment(mels: torch.Tensor) -> torch.Tensor:
        keep = torch.ones_like(mels, dtype=torch.bool)
        for axis, widest in ((time_axis, masks.time_mask), (band_axis, masks.freq_mask)):
            if widest:
                keep &= random_span(mels, axis, widest)
        return mels * keep

    return augment


def random_span(batch: torch.Tensor, axis: int, widest: int) -> torch.Tensor:
    """Per sample, False over a random span of 0..widest positions along `axis`, shaped
    to broadcast over the batch."""
    size = batch.shape[axis]
    count = len(batch)
    width = torch.randint(0, min(widest, size) + 1, (count,), device="cpu")
    start = (torch.rand(count, device="cpu") * (size - width + 1)).long()
    position = torch.arange(size)[None, :]
    inside = (position >= start[:, None]) & (position < (start + width)[:, None])
    shape = [count] + [1] * (batch.dim() - 1)
    shape[axis] = size
    return (~inside).reshape(shape).to(batch.device)
