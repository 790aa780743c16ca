"""Name -> builder. Each builder takes the model's spec, the shape of one sample and the
number of outputs (classes, or 1 for regression), all inferred from the data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from deeprig.models.cnn import CNN
from deeprig.models.mlp import MLP
from deeprig.models.rnn import RecurrentNet
from deeprig.models.shapes import as_image, as_sequence

Builder = Callable[[Any, tuple[int, ...], int], nn.Module]

REGISTRY: dict[str, Builder] = {
    "mlp": lambda cfg, shape, out: MLP(shape, out, cfg.hidden, cfg.dropout, cfg.activation),
    "cnn": lambda cfg, shape, out: CNN(
        shape, out, cfg.channels, cfg.kernel_size, cfg.hidden, cfg.dropout, cfg.batch_norm
    ),
    "lstm": lambda cfg, shape, out: RecurrentNet(
        "lstm", shape, out, cfg.hidden_size, cfg.num_layers, cfg.bidirectional, cfg.dropout
    ),
    "gru": lambda cfg, shape, out: RecurrentNet(
        "gru", shape, out, cfg.hidden_size, cfg.num_layers, cfg.bidirectional, cfg.dropout
    ),
}

# How each architecture reads a sample; None means any shape (flattened).
_SHAPE_CHECKS: dict[str, Callable[[tuple[int, ...]], tuple[int, ...]] | None] = {
    "mlp": None,
    "cnn": as_image,
    "lstm": as_sequence,
    "gru": as_sequence,
}


def build_model(cfg: Any, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    return REGISTRY[cfg.name](cfg, tuple(input_shape), num_outputs)


def check_input_shape(name: str, input_shape: tuple[int, ...]) -> None:
    """Raise InputShapeError when `name` cannot read samples of `input_shape`."""
    check = _SHAPE_CHECKS[name]
    if check is not None:
        check(tuple(input_shape))
