"""LSTM or GRU over a sequence. Feature sequences (rows of an image, windows of a series)
are read as they are; token ids (text) go through an embedding first, and their padding
(id 0, on the right) is packed away so the recurrent layers never read it. The head reads
the hidden state at the last real step, or the mean over the real steps."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from deeprig.models.shapes import as_sequence

PAD_ID = 0


class RecurrentNet(nn.Module):
    def __init__(
        self,
        cell: str,
        input_shape: tuple[int, ...],
        num_outputs: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        vocab_size: int | None = None,
        embedding_dim: int = 64,
        pooling: str = "last",
    ):
        super().__init__()
        self.pooling = pooling
        if vocab_size is not None:  # token ids: (batch, steps) of int64
            self.embedding: nn.Embedding | None = nn.Embedding(
                vocab_size, embedding_dim, padding_idx=PAD_ID
            )
            self.sequence_shape = (input_shape[0], embedding_dim)
        else:
            self.embedding = None
            self.sequence_shape = as_sequence(input_shape)
        rnn_class = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn_class(
            input_size=self.sequence_shape[1],
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            # torch warns when dropout is set on a single layer: it would never apply.
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.directions = 2 if bidirectional else 1
        self.head = nn.Linear(hidden_size * self.directions, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        if self.embedding is not None:
            return self.head(self._read_tokens(x))
        x = x.reshape(x.shape[0], *self.sequence_shape)
        out, _ = self.rnn(x)
        pooled = out.mean(dim=1) if self.pooling == "mean" else self._last(out)
        return self.head(pooled)

    def _last(self, out: Tensor) -> Tensor:
        """The last step's state; read both ways, the backward half has read it all at
        step 0."""
        if self.directions == 1:
            return out[:, -1, :]
        half = out.shape[-1] // 2
        return torch.cat([out[:, -1, :half], out[:, 0, half:]], dim=1)

    def _read_tokens(self, ids: Tensor) -> Tensor:
        assert self.embedding is not None
        lengths = (ids != PAD_ID).sum(dim=1).clamp(min=1)  # (an empty text reads one pad)
        packed = pack_padded_sequence(
            self.embedding(ids), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, hidden = self.rnn(packed)
        if self.pooling == "mean":
            padded, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
            mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
            summed = (padded * mask[..., None]).sum(dim=1)
            return summed / lengths[:, None].to(summed.dtype)
        final = hidden[0] if isinstance(hidden, tuple) else hidden  # LSTM: (h, c)
        # (layers * directions, batch, hidden): the top layer's state, each direction's
        return torch.cat(list(final[-self.directions :]), dim=1)
