"""Log-mel spectrograms with torch's own STFT (torchaudio's wheels pin another torch than
the lock's): the same module featurises the clips for training and sits inside the logged
model, so both read waveforms the same way."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# Added to the mel power before the log: silence stays finite (-13.8), far below speech.
_FLOOR = 1e-6


def hz_to_mel(hz: Tensor) -> Tensor:
    """The HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int) -> Tensor:
    """(n_fft // 2 + 1, n_mels): triangular filters whose centres are evenly spaced on the
    mel scale from 0 Hz to Nyquist, each rising from its left neighbour's centre to its
    own and falling to its right neighbour's (peak 1)."""
    bins_hz = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    top = hz_to_mel(torch.tensor(sample_rate / 2, dtype=torch.float64))
    edges = mel_to_hz(torch.linspace(0.0, float(top), n_mels + 2, dtype=torch.float64))
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_hz[:, None] - left) / (centre - left)
    falling = (right - bins_hz[:, None]) / (right - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


class LogMel(nn.Module):
    """Waveforms (batch, samples) -> log mel power (batch, n_mels, frames); frames =
    1 + samples // hop (each frame centred on its hop, the clip's edges reflected)."""

    def __init__(self, sample_rate: int, n_mels: int, window_ms: float, hop_ms: float):
        super().__init__()
        self.win_length = max(2, round(sample_rate * window_ms / 1000))
        self.hop_length = max(1, round(sample_rate * hop_ms / 1000))
        self.n_fft = 2 ** math.ceil(math.log2(self.win_length))
        self.window: Tensor
        self.filterbank: Tensor
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        self.register_buffer(
            "filterbank", mel_filterbank(n_mels, self.n_fft, sample_rate), persistent=False
        )

    def frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.hop_length

    def forward(self, waves: Tensor) -> Tensor:
        spectrum = torch.stft(
            waves,
            self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=True,
            return_complex=True,
        )
        power = spectrum.real**2 + spectrum.imag**2  # (batch, n_fft // 2 + 1, frames)
        mel = torch.matmul(power.transpose(1, 2), self.filterbank).transpose(1, 2)
        return torch.log(mel + _FLOOR)
