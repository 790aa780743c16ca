"""Encoded images (PNG, JPEG, ...) to pixel arrays: decoded by PIL, converted to the
channels asked for, resized, channels first."""

from __future__ import annotations

import io

import numpy as np

from deeprig.data.standardize import pixel_floats


def decode_images(files: list, shape: tuple[int, ...]) -> np.ndarray:
    """Encoded images (paths PIL opens, file objects or bytes) -> (rows, C, H, W) floats in
    [0, 1], each converted to the channels and resized to the size of `shape`."""
    return pixel_floats(decode_pixels(files, shape), None)


def decode_pixels(files: list, shape: tuple[int, ...]) -> np.ndarray:
    """decode_images, as (rows, C, H, W) bytes."""
    from PIL import Image

    channels, height, width = shape
    mode = "L" if channels == 1 else "RGB"
    images = []
    for file in files:
        with Image.open(io.BytesIO(file) if isinstance(file, bytes) else file) as encoded:
            image = encoded if encoded.mode == mode else encoded.convert(mode)
            if image.size != (width, height):
                image = image.resize((width, height))
            images.append(np.asarray(image))  # (decoded here, while the file is open)
    return channels_first(np.stack(images), channels)


def channels_first(images: np.ndarray, channels: int) -> np.ndarray:
    """(rows, H, W) or (rows, H, W, C) -> (rows, C, H, W)."""
    if images.ndim == 3:
        return images[:, None, :, :]
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)[:, :channels])
