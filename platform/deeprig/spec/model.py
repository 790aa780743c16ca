"""`model:` of a train spec: one config class per architecture, members of the `ModelSpec`
union looked up by `name`. deeprig.models.registry maps each class to its builder and the
sample shapes it reads (a unit test keeps the two in step).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field, ValidationInfo, field_validator

from deeprig.spec.common import StrictModel, Target


class MLPConfig(StrictModel):
    name: Literal["mlp"] = Field(description="Dense network over the flattened input.")
    hidden: list[Annotated[int, Field(ge=1)]] = Field(
        default=[128, 64], min_length=1, description="Width of each hidden layer."
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout after each layer.")
    activation: Literal["relu", "gelu", "tanh"] = Field(default="relu", description="Activation.")


class CNNConfig(StrictModel):
    name: Literal["cnn"] = Field(description="2-D convolutions over image-shaped input.")
    channels: list[Annotated[int, Field(ge=1)]] = Field(
        default=[16, 32], min_length=1, description="Output channels of each conv block."
    )
    kernel_size: int = Field(default=3, ge=1, le=11, description="Square kernel size.")
    hidden: int = Field(default=64, ge=1, description="Width of the dense layer after the convs.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout before the head.")
    batch_norm: bool = Field(default=True, description="BatchNorm after each convolution.")


class RNNConfig(StrictModel):
    name: Literal["lstm", "gru"] = Field(description="Recurrent network over a sequence.")
    hidden_size: int = Field(default=64, ge=1, description="Hidden units per layer.")
    num_layers: int = Field(default=1, ge=1, le=8, description="Stacked recurrent layers.")
    bidirectional: bool = Field(default=False, description="Read the sequence both ways.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout between layers.")
    embedding_dim: int = Field(
        default=64,
        ge=1,
        description="Text data: width of the token embedding the recurrent layers read.",
    )
    pooling: Literal["last", "mean"] = Field(
        default="last",
        description=(
            "What feeds the head: the hidden state at the last real time step, or the mean "
            "over the real time steps (text padding is masked either way)."
        ),
    )


class TransformerConfig(StrictModel):
    name: Literal["transformer"] = Field(
        description="Pre-norm transformer over token ids (text) or time steps (series)."
    )
    d_model: int = Field(default=128, ge=1, description="Width of every position's vector.")
    n_heads: int = Field(default=4, ge=1, description="Attention heads (they split d_model).")
    n_layers: int = Field(default=2, ge=1, le=128, description="Transformer blocks.")
    ff_mult: int = Field(
        default=4, ge=1, le=16, description="Feed-forward width as a multiple of d_model."
    )
    dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Dropout on attention and residual branches."
    )
    pooling: Literal["cls", "mean"] = Field(
        default="cls",
        description=(
            "What feeds the head of a model that is not causal: a learned [CLS] vector read "
            "before the sequence, or the mean over the real steps (text padding is masked)."
        ),
    )
    causal: bool = Field(
        default=False,
        description=(
            "Each position attends only to those before it and the head predicts at every "
            "position: the next-token model `data.task: language_model` trains."
        ),
    )
    max_length: int | None = Field(
        default=None,
        ge=1,
        description="Positions the model holds. Omitted: the data's sequence length.",
    )
    positions: Literal["learned", "sinusoidal"] = Field(
        default="learned", description="Learned position embeddings, or fixed sinusoids."
    )

    @field_validator("n_heads")
    @classmethod
    def _heads_divide_width(cls, n_heads: int, info: ValidationInfo) -> int:
        # A field validator (d_model is declared, so validated, first) so that the error's
        # path is model.n_heads, not model.
        d_model = info.data.get("d_model")
        if d_model is not None and d_model % n_heads:
            raise ValueError(
                f"n_heads ({n_heads}) must divide d_model ({d_model}): e.g. "
                f"d_model: {n_heads * max(1, round(d_model / n_heads))}"
            )
        return n_heads


class CustomModelConfig(StrictModel):
    name: Literal["custom"] = Field(description="Your own network, found on `code.paths`.")
    target: Target = Field(
        description="module:attr of a torch.nn.Module subclass, or of a function returning one.",
    )
    args: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Keyword arguments (tunable as model.args.NAME); `num_outputs` and `input_shape` "
            "are filled from the data when it takes parameters of those names."
        ),
    )


ModelSpec = Annotated[
    MLPConfig | CNNConfig | RNNConfig | TransformerConfig | CustomModelConfig,
    Field(discriminator="name"),
]
MODEL_CONFIGS: tuple[type[StrictModel], ...] = get_args(get_args(ModelSpec)[0])
