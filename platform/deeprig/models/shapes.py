"""How a sample's natural shape maps onto what each architecture reads.

Data sets keep their natural shape (digits are 8x8); the model adapts: an MLP flattens,
a CNN reads (channels, height, width), a recurrent net reads rows as time steps.
"""

from __future__ import annotations


class InputShapeError(ValueError):
    """The data's sample shape (or task) does not fit the architecture; `field` is the
    spec field to fix."""

    def __init__(self, message: str, field: str = "model.name"):
        super().__init__(message)
        self.field = field


def as_image(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 2:
        return (1, shape[0], shape[1])
    if len(shape) == 3:
        return (shape[0], shape[1], shape[2])
    raise InputShapeError(
        f"a CNN needs image-shaped samples (H, W) or (C, H, W), got shape {list(shape)}; "
        "set data.feature_shape (e.g. [8, 8]) or use model mlp"
    )


def as_sequence(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 2:
        return (shape[0], shape[1])
    if len(shape) == 1:
        # One feature per time step: a plain vector read as a univariate sequence.
        return (shape[0], 1)
    raise InputShapeError(
        f"a recurrent net needs (time steps, features) samples, got shape {list(shape)}; "
        "set data.feature_shape"
    )
