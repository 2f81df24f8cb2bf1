"""The audio front end's configuration, part of a space config (:class:`supernet.space.SpaceConfig`).

Kept apart from :mod:`supernet.audio` (which builds the layer and reads WAV files) because space configs are
read by the search core, which imports no torch.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LogMelConfig:
    """The audio front end: clips of ``samples`` at ``sample_rate`` Hz, frames of ``n_fft`` samples every
    ``hop``, ``n_mels`` mel bands between 0 Hz and half the sample rate. The defaults (32 ms frames every
    16 ms, 40 bands) suit spoken digits at 8 kHz: one second is a 40 x 61 spectrogram."""

    sample_rate: int = 8000
    samples: int = 8000
    n_fft: int = 256
    hop: int = 128
    n_mels: int = 40

    def __post_init__(self) -> None:
        sizes = (self.sample_rate, self.samples, self.n_fft, self.hop, self.n_mels)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
            raise ValueError("the front end's sample rate, samples, n_fft, hop and n_mels must be positive integers")
        if not (self.n_fft <= self.samples <= 10 ** 7 and self.sample_rate <= 10 ** 6 and self.hop <= self.n_fft
                and self.n_fft <= 8192 and self.n_mels <= self.n_fft // 2):
            raise ValueError(f"front end out of range: {self}; needs n_fft <= samples <= 1e7, hop <= n_fft <= 8192, "
                             "n_mels <= n_fft / 2 and sample rate <= 1e6")

    @property
    def frames(self) -> int:
        return 1 + (self.samples - self.n_fft) // self.hop

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of the spectrogram the stem's convolution sees."""
        return (1, self.n_mels, self.frames)


@dataclass(frozen=True)
class TokenConfig:
    """The input of a text space: sentences as ``max_len`` token ids (longer ones cut, shorter ones padded
    with id 0), words outside the ``vocab_size - 2`` most frequent of the training split as id 1."""

    vocab_size: int = 16000
    max_len: int = 64

    def __post_init__(self) -> None:
        sizes = (self.vocab_size, self.max_len)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
            raise ValueError("the vocabulary size and sentence length must be positive integers")
        if not (3 <= self.vocab_size <= 2 ** 24 and self.max_len <= 4096):
            raise ValueError(f"text input out of range: {self}; needs 3 <= vocab_size <= 2^24 (token ids travel "
                             "as float32) and max_len <= 4096")
