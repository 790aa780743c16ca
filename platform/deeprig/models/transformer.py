"""A transformer encoder (or, causal, a decoder-only language model) over a sequence.

Token ids (text) go through an embedding and their padding (id 0, on the right) is masked
out of attention and pooling; feature sequences (windows of a series, frames) go through a
linear projection. Pre-norm blocks (x + attention(norm(x)), then x + feed-forward(norm(x)))
attend with torch's `scaled_dot_product_attention`, which picks a fused kernel where the
hardware has one. Each `TransformerBlock` holds its own parameters: it is the unit FSDP
shards (models/registry.py names it).

Not causal: the head reads one vector per sample, a learned [CLS] vector put before the
sequence (`pooling: cls`) or the mean over the real steps (`mean`), and gives
(batch, outputs). Causal: position t attends to positions <= t only and the head predicts
at every position, (batch, steps, outputs): next-token logits of a language model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deeprig.models.shapes import InputShapeError, as_sequence

PAD_ID = 0


class TransformerBlock(nn.Module):
    """Pre-norm self-attention then feed-forward, each added back to its input."""

    def __init__(self, d_model: int, n_heads: int, ff_mult: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.dropout_p = dropout
        self.attention_norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.attention_out = nn.Linear(d_model, d_model)
        self.ff_norm = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_mult * d_model), nn.GELU(), nn.Linear(ff_mult * d_model, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
        """`mask`: (batch, 1, steps, steps) booleans, True where a query may attend to a
        key (it then already holds the causal rule); None with `causal`: the fused causal
        kernel."""
        batch, steps, width = x.shape
        q, k, v = (
            self.qkv(self.attention_norm(x))
            .view(batch, steps, 3, self.n_heads, width // self.n_heads)
            .permute(2, 0, 3, 1, 4)  # (q/k/v, batch, heads, steps, head width)
        )
        attended = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout_p if self.training else 0.0,
            is_causal=causal and mask is None,
        )
        merged = attended.transpose(1, 2).reshape(batch, steps, width)
        x = x + self.dropout(self.attention_out(merged))
        return x + self.dropout(self.ff(self.ff_norm(x)))


class Transformer(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 2,
        ff_mult: int = 4,
        dropout: float = 0.0,
        pooling: str = "cls",
        causal: bool = False,
        max_length: int | None = None,
        positions: str = "learned",
        vocab_size: int | None = None,
    ):
        super().__init__()
        self.causal = causal
        self.pooling = "none" if causal else pooling
        if vocab_size is not None:  # token ids: (batch, steps) of int64
            self.embedding: nn.Embedding | None = nn.Embedding(vocab_size, d_model)
            self.projection: nn.Linear | None = None
            self.sequence_shape: tuple[int, ...] = (input_shape[0],)
        else:
            self.embedding = None
            self.sequence_shape = as_sequence(input_shape)
            self.projection = nn.Linear(self.sequence_shape[1], d_model)
        self.max_length = max_length or positions_needed(
            self.sequence_shape[0], self.pooling == "cls"
        )
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if self.pooling == "cls" else None
        self.position: nn.Embedding | None = None
        if positions == "learned":
            self.position = nn.Embedding(self.max_length, d_model)
        else:
            self.sinusoid: Tensor
            self.register_buffer("sinusoid", sinusoid_table(self.max_length, d_model))
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, ff_mult, dropout) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        if self.embedding is not None:
            valid = x != PAD_ID
            valid[:, 0] = True  # an empty text reads one pad (a row with no key is undefined)
            h = self.embedding(x)
        else:
            assert self.projection is not None
            x = x.reshape(x.shape[0], *self.sequence_shape)
            valid = None
            h = self.projection(x)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1)
            if valid is not None:
                valid = torch.cat([valid.new_ones(h.shape[0], 1), valid], dim=1)
        steps = h.shape[1]
        if self.position is not None:
            h = h + self.position(torch.arange(steps, device=h.device))
        else:
            h = h + self.sinusoid[:steps]
        h = self.dropout(h)
        mask = self._attention_mask(valid, steps)
        for block in self.blocks:
            h = block(h, mask, self.causal)
        h = self.norm(h)
        if self.causal:
            return self.head(h)
        if self.cls is not None:
            return self.head(h[:, 0])
        if valid is None:
            return self.head(h.mean(dim=1))
        weights = valid[..., None].to(h.dtype)
        return self.head((h * weights).sum(dim=1) / weights.sum(dim=1))

    def _attention_mask(self, valid: Tensor | None, steps: int) -> Tensor | None:
        """Who may attend to whom, or None where nothing is masked (the causal rule alone
        goes to the fused kernel as `is_causal`)."""
        if valid is None or bool(valid.all()):
            return None
        mask = valid[:, None, None, :]  # (batch, 1, 1, key): padding is never read
        if self.causal:
            order = torch.ones(steps, steps, dtype=torch.bool, device=valid.device).tril()
            mask = mask & order
        return mask


def positions_needed(steps: int, with_cls: bool) -> int:
    """Positions a sequence of `steps` occupies (one more for the [CLS] vector)."""
    return steps + (1 if with_cls else 0)


def sinusoid_table(length: int, width: int) -> Tensor:
    """The fixed sine/cosine positions of "Attention is all you need", (length, width)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(1e4) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : width // 2]
    return table


def check_transformer_input(cfg, input_shape: tuple[int, ...], tokens: bool) -> None:
    """Raise InputShapeError when the transformer `cfg` cannot read samples of
    `input_shape` (token ids when `tokens`)."""
    steps = input_shape[0] if tokens else as_sequence(input_shape)[0]
    needed = positions_needed(steps, cfg.pooling == "cls" and not cfg.causal)
    if cfg.max_length is not None and cfg.max_length < needed:
        raise InputShapeError(
            f"max_length {cfg.max_length} holds fewer positions than a sample needs "
            f"({needed}); raise it to {needed} or leave it out (the data's length)",
            field="model.max_length",
        )
