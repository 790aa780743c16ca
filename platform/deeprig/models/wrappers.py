"""The logged model: the trained network behind the preprocessing its data was fitted with
(data.info.Fitted), so what MLflow serves reads raw inputs: pixels in [0, 1], unscaled
feature columns, the series' own values, sentences, or waveforms. Free of Ray and MLflow."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn


class Standardized(nn.Module):
    """net((x - mean) / std): images normalised per channel, tabular columns per column."""

    def __init__(self, net: nn.Module, mean: Tensor, std: Tensor):
        super().__init__()
        self.net = net
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


class SeriesForecaster(nn.Module):
    """Raw windows (batch, window, columns) in, the target's forecast at every step
    1..horizon after the window's last row out (batch, horizon), in its own units; with
    `change`, the window is read relative to its last row and each step's forecast is that
    row's target value plus the predicted change. `target_mean` and `target_std` scale
    each step back (horizon,)."""

    def __init__(
        self,
        net: nn.Module,
        input_mean: Tensor,
        input_std: Tensor,
        target_mean: Tensor,
        target_std: Tensor,
        change: bool,
        target_index: int,
    ):
        super().__init__()
        self.net = net
        self.input_mean: Tensor
        self.input_std: Tensor
        self.target_mean: Tensor
        self.target_std: Tensor
        self.register_buffer("input_mean", input_mean)
        self.register_buffer("input_std", input_std)
        self.register_buffer("target_mean", target_mean)
        self.register_buffer("target_std", target_std)
        self.change, self.target_index = change, target_index

    def forward(self, x: Tensor) -> Tensor:
        last = x[:, -1:, :]
        relative = x - last if self.change else x
        out = self.net((relative - self.input_mean) / self.input_std)
        out = out * self.target_std + self.target_mean
        if self.change:
            out = out + last[:, 0, self.target_index : self.target_index + 1]
        return out


class TextClassifier(nn.Module):
    """Token ids in, logits out (`forward`), and `predict(sentences)` -> class names: the
    tokenizer it was trained with travels inside it (as its JSON)."""

    def __init__(self, net: nn.Module, tokenizer_json: str, classes: list[str]):
        super().__init__()
        self.net = net
        self.tokenizer_json = tokenizer_json
        self.classes = list(classes)
        self._tokenizer: Any = None

    def forward(self, ids: Tensor) -> Tensor:
        return self.net(ids)

    def tokenize(self, sentences: list[str]) -> Tensor:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_str(self.tokenizer_json)
        encoded = self._tokenizer.encode_batch(list(sentences))
        return torch.tensor([e.ids for e in encoded], dtype=torch.long)

    @torch.no_grad()
    def predict_proba(self, sentences: list[str]) -> Tensor:
        self.eval()
        return self.net(self.tokenize(sentences)).softmax(dim=1)

    def predict(self, sentences: list[str]) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(sentences).argmax(dim=1).tolist()]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_tokenizer"] = None  # rebuilt from the JSON on first use
        return state


class LanguageModel(nn.Module):
    """Token ids in, next-token logits at every position out (`forward`), and
    `generate(prompt, max_new_tokens)` -> the prompt continued: the tokenizer it was trained
    with travels inside it (as its JSON); it reads the last `context` tokens."""

    def __init__(self, net: nn.Module, tokenizer_json: str, context: int, end_of_text: str):
        super().__init__()
        self.net = net
        self.tokenizer_json = tokenizer_json
        self.context = context
        self.end_of_text = end_of_text
        self._tokenizer: Any = None

    def forward(self, ids: Tensor) -> Tensor:
        return self.net(ids)

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_str(self.tokenizer_json)
        return self._tokenizer

    @torch.no_grad()
    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 100,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> str:
        """The prompt and up to `max_new_tokens` tokens drawn after it, one at a time
        (`temperature` 0: always the likeliest; `top_k`: only from the k likeliest); an
        empty prompt starts a new text."""
        self.eval()
        tokenizer = self.tokenizer
        ids = tokenizer.encode(prompt).ids or [tokenizer.token_to_id(self.end_of_text)]
        start = len(ids)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        for _ in range(max_new_tokens):
            logits = self.net(torch.tensor([ids[-self.context :]]))[0, -1].float()
            logits[0] = -math.inf  # padding: never a next token
            if temperature <= 0:
                ids.append(int(logits.argmax()))
                continue
            logits = logits / temperature
            if top_k is not None:
                cutoff = logits.topk(min(top_k, len(logits))).values[-1]
                logits[logits < cutoff] = -math.inf
            ids.append(int(torch.multinomial(logits.softmax(dim=0), 1, generator=generator)))
        return prompt + tokenizer.decode(ids[start:], skip_special_tokens=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_tokenizer"] = None  # rebuilt from the JSON on first use
        return state


class AudioClassifier(nn.Module):
    """Waveforms (batch, samples) at the training clips' rate in, logits out: each clip
    padded with silence or cut to the training length, made a log-mel spectrogram,
    standardised per mel band and laid out as the network read it (`view`)."""

    def __init__(
        self,
        net: nn.Module,
        log_mel: nn.Module,
        mean: Tensor,
        std: Tensor,
        num_samples: int,
        view: str,
    ):
        super().__init__()
        self.net = net
        self.log_mel = log_mel
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", mean)  # (1, n_mels, 1)
        self.register_buffer("std", std)
        self.num_samples = num_samples
        self.view = view
        self.raw_input_shape = (num_samples,)

    def forward(self, waves: Tensor) -> Tensor:
        waves = waves[:, : self.num_samples]
        waves = torch.nn.functional.pad(waves, (0, self.num_samples - waves.shape[1]))
        mels = (self.log_mel(waves) - self.mean) / self.std
        return self.net(mels.transpose(1, 2) if self.view == "frames" else mels[:, None])
