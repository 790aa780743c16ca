"""The one table of architectures: each model config class of the spec -> how to build the
network and which sample shapes it reads. Each builder takes the model's config, the shape
of one sample and the number of outputs (classes, or 1 for regression), all inferred from
the data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from deeprig.models.cnn import CNN
from deeprig.models.mlp import MLP
from deeprig.models.rnn import RecurrentNet
from deeprig.models.shapes import as_image, as_sequence
from deeprig.spec.train import CNNConfig, CustomModelConfig, MLPConfig, RNNConfig
from deeprig.usercode.checks import build_custom_model


@dataclass(frozen=True)
class Architecture:
    build: Callable[[Any, tuple[int, ...], int], nn.Module]
    # How the network reads one sample (raises InputShapeError); None: any shape, flattened.
    reads: Callable[[tuple[int, ...]], tuple[int, ...]] | None


ARCHITECTURES: dict[type, Architecture] = {
    MLPConfig: Architecture(
        lambda cfg, shape, out: MLP(shape, out, cfg.hidden, cfg.dropout, cfg.activation),
        reads=None,
    ),
    CNNConfig: Architecture(
        lambda cfg, shape, out: CNN(
            shape, out, cfg.channels, cfg.kernel_size, cfg.hidden, cfg.dropout, cfg.batch_norm
        ),
        reads=as_image,
    ),
    RNNConfig: Architecture(
        lambda cfg, shape, out: RecurrentNet(
            cfg.name, shape, out, cfg.hidden_size, cfg.num_layers, cfg.bidirectional, cfg.dropout
        ),
        reads=as_sequence,
    ),
    # The user's own network (code.paths): it reads whatever it reads; the pre-flight's dry
    # run on real samples is its shape check.
    CustomModelConfig: Architecture(build_custom_model, reads=None),
}


def build_model(cfg: Any, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    return ARCHITECTURES[type(cfg)].build(cfg, tuple(input_shape), num_outputs)


def check_input_shape(cfg: Any, input_shape: tuple[int, ...]) -> None:
    """Raise InputShapeError when the model `cfg` describes cannot read samples of
    `input_shape`."""
    reads = ARCHITECTURES[type(cfg)].reads
    if reads is not None:
        reads(tuple(input_shape))
