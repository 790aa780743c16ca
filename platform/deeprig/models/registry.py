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
from deeprig.models.shapes import InputShapeError, as_image, as_sequence
from deeprig.spec.train import CNNConfig, CustomModelConfig, MLPConfig, RNNConfig
from deeprig.usercode.checks import build_custom_model


@dataclass(frozen=True)
class Architecture:
    # (config, sample shape, outputs, vocabulary size of token-id inputs or None) -> network
    build: Callable[[Any, tuple[int, ...], int, int | None], nn.Module]
    # How the network reads one sample (raises InputShapeError); None: any shape, flattened.
    reads: Callable[[tuple[int, ...]], tuple[int, ...]] | None


ARCHITECTURES: dict[type, Architecture] = {
    MLPConfig: Architecture(
        lambda cfg, shape, out, vocab: MLP(shape, out, cfg.hidden, cfg.dropout, cfg.activation),
        reads=None,
    ),
    CNNConfig: Architecture(
        lambda cfg, shape, out, vocab: CNN(
            shape, out, cfg.channels, cfg.kernel_size, cfg.hidden, cfg.dropout, cfg.batch_norm
        ),
        reads=as_image,
    ),
    RNNConfig: Architecture(
        lambda cfg, shape, out, vocab: RecurrentNet(
            cfg.name,
            shape,
            out,
            cfg.hidden_size,
            cfg.num_layers,
            cfg.bidirectional,
            cfg.dropout,
            vocab_size=vocab,
            embedding_dim=cfg.embedding_dim,
            pooling=cfg.pooling,
        ),
        reads=as_sequence,
    ),
    # The user's own network (code.paths): it reads whatever it reads; the pre-flight's dry
    # run on real samples is its shape check.
    CustomModelConfig: Architecture(build_custom_model, reads=None),
}


# Architectures that read token ids (an embedding first); the others read features.
READS_TOKENS = (RNNConfig, CustomModelConfig)


def build_model(
    cfg: Any, input_shape: tuple[int, ...], num_outputs: int, vocab_size: int | None = None
) -> nn.Module:
    return ARCHITECTURES[type(cfg)].build(cfg, tuple(input_shape), num_outputs, vocab_size)


def check_input_shape(
    cfg: Any, input_shape: tuple[int, ...], vocab_size: int | None = None
) -> None:
    """Raise InputShapeError when the model `cfg` describes cannot read samples of
    `input_shape` (token ids, when `vocab_size` is set)."""
    if vocab_size is not None:
        if not isinstance(cfg, READS_TOKENS):
            raise InputShapeError(
                f"text arrives as token ids, which model {cfg.name} cannot read; use lstm or "
                "gru (they embed the tokens), or your own model (name: custom)"
            )
        return
    reads = ARCHITECTURES[type(cfg)].reads
    if reads is not None:
        reads(tuple(input_shape))
