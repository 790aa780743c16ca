"""LSTM or GRU over a sequence; the last time step's hidden state feeds a linear head."""

from __future__ import annotations

from torch import Tensor, nn

from deeprig.models.shapes import as_sequence


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
    ):
        super().__init__()
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
        directions = 2 if bidirectional else 1
        self.head = nn.Linear(hidden_size * directions, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], *self.sequence_shape)
        out, _ = self.rnn(x)
        return self.head(out[:, -1, :])
