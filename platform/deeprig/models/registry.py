"""The one table of architectures: each model config class of the spec -> how to build the
network, which samples it reads and which of its modules FSDP shards as units. Each
builder takes the model's config, the shape of one sample, the number of outputs
(classes, 1 for regression or a forecast's steps, the vocabulary for a language model)
and the vocabulary of token-id inputs, all inferred from the data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from deeprig.models.cnn import CNN
from deeprig.models.mlp import MLP
from deeprig.models.rnn import RecurrentNet
from deeprig.models.shapes import InputShapeError, as_image, as_sequence
from deeprig.models.transformer import Transformer, TransformerBlock, check_transformer_input
from deeprig.spec.model import (
    CNNConfig,
    CustomModelConfig,
    MLPConfig,
    RNNConfig,
    TransformerConfig,
)
from deeprig.usercode.checks import build_custom_model


@dataclass(frozen=True)
class Architecture:
    # (config, sample shape, outputs, vocabulary size of token-id inputs or None) -> network
    build: Callable[[Any, tuple[int, ...], int, int | None], nn.Module]
    # (config, sample shape, token ids?): raises InputShapeError when the network cannot
    # read such samples; None: any shape, flattened (or, a user's model, its dry run).
    reads: Callable[[Any, tuple[int, ...], bool], object] | None
    # Whether it reads token ids (text): it embeds them first.
    reads_tokens: bool
    # The module classes FSDP wraps one by one (`scaling.fsdp.shard: auto`) before the
    # root: each holds its own parameters. (): the root alone is the unit. None: not
    # known ahead (a user's network).
    shard_units: tuple[type[nn.Module], ...] | None


ARCHITECTURES: dict[type, Architecture] = {
    MLPConfig: Architecture(
        lambda cfg, shape, out, vocab: MLP(shape, out, cfg.hidden, cfg.dropout, cfg.activation),
        reads=None,
        reads_tokens=False,
        shard_units=(nn.Linear,),
    ),
    CNNConfig: Architecture(
        lambda cfg, shape, out, vocab: CNN(
            shape, out, cfg.channels, cfg.kernel_size, cfg.hidden, cfg.dropout, cfg.batch_norm
        ),
        reads=lambda cfg, shape, tokens: as_image(shape),
        reads_tokens=False,
        shard_units=(nn.Conv2d, nn.Linear),
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
        reads=lambda cfg, shape, tokens: as_sequence(shape),
        reads_tokens=True,
        # torch's LSTM/GRU keep their weights flattened together for the fused kernel.
        shard_units=(),
    ),
    TransformerConfig: Architecture(
        lambda cfg, shape, out, vocab: Transformer(
            shape,
            out,
            cfg.d_model,
            cfg.n_heads,
            cfg.n_layers,
            cfg.ff_mult,
            cfg.dropout,
            cfg.pooling,
            cfg.causal,
            cfg.max_length,
            cfg.positions,
            vocab_size=vocab,
        ),
        reads=check_transformer_input,
        reads_tokens=True,
        shard_units=(TransformerBlock,),
    ),
    # The user's own network (code.paths): it reads whatever it reads; the pre-flight's dry
    # run on real samples is its shape check.
    CustomModelConfig: Architecture(
        build_custom_model, reads=None, reads_tokens=True, shard_units=None
    ),
}


def build_model(
    cfg: Any, input_shape: tuple[int, ...], num_outputs: int, vocab_size: int | None = None
) -> nn.Module:
    return ARCHITECTURES[type(cfg)].build(cfg, tuple(input_shape), num_outputs, vocab_size)


def check_input_shape(
    cfg: Any,
    input_shape: tuple[int, ...],
    vocab_size: int | None = None,
    task: str = "classification",
) -> None:
    """Raise InputShapeError when the model `cfg` describes cannot read samples of
    `input_shape` (token ids, when `vocab_size` is set) or cannot do `task`."""
    architecture = ARCHITECTURES[type(cfg)]
    tokens = vocab_size is not None
    if tokens and not architecture.reads_tokens:
        raise InputShapeError(
            f"text arrives as token ids, which model {cfg.name} cannot read; use lstm or "
            "gru (they embed the tokens), transformer, or your own model (name: custom)"
        )
    causal = getattr(cfg, "causal", False)
    if task == "language_model" and not causal:
        raise InputShapeError(
            "data.task: language_model predicts the next token at every position: use "
            "model: {name: transformer, causal: true}",
            field="model.causal" if hasattr(cfg, "causal") else "model.name",
        )
    if causal and task != "language_model":
        raise InputShapeError(
            f"causal: true predicts at every position (data.task: language_model); a {task} "
            "model reads the whole sequence: set causal: false",
            field="model.causal",
        )
    if architecture.reads is not None:
        architecture.reads(cfg, tuple(input_shape), tokens)
