"""Audio: clips read from WAV files, and the log-mel front end that deployed networks carry inside them.

A space with an audio front end (``SpaceConfig.frontend``) takes raw waveforms: a clip is ``samples`` 16-bit
samples at ``sample_rate`` (shorter recordings are padded with silence at the end, longer ones cut around
their middle), stored as int16 ``[N, 1, 1, samples]`` so that it travels through the same batching, batch-norm
recalibration and latency timing as images. :class:`LogMel` turns a batch of clips into a normalised
log-mel spectrogram ``[N, 1, n_mels, frames]``, the one-channel image the convolutional stages see; it is the
first layer of the stem, so an extracted or exported subnet takes audio, not features.

The short-time Fourier transform is a strided convolution with a fixed, windowed DFT basis: it scripts, exports
to ONNX and runs as one oneDNN convolution. :func:`log_mel_reference` computes the same features with
``torch.stft`` and is the test oracle.
"""
from __future__ import annotations

import math
import wave
from pathlib import Path

import torch
from torch import nn

from supernet.errors import UserError
from supernet.frontend import LogMelConfig

LOG_FLOOR = 1e-6  # added to mel energies before the log: silence (zero padding) stays finite
NORM_FLOOR = 1e-2  # added to a clip's standard deviation (a few units for sound): silence stays near 0


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """The HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filters(config: LogMelConfig) -> torch.Tensor:
    """``[n_mels, bins]`` triangular filters, centres evenly spaced on the mel scale from 0 Hz to Nyquist, each
    rising from its left neighbour's centre to 1 at its own and falling to its right neighbour's (HTK, no area
    normalisation)."""
    nyquist = config.sample_rate / 2
    edges = mel_to_hz(torch.linspace(0.0, float(hz_to_mel(torch.tensor(nyquist))), config.n_mels + 2,
                                     dtype=torch.float64))
    freqs = torch.linspace(0.0, nyquist, config.bins, dtype=torch.float64)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - left) / (centre - left)
    falling = (right - freqs) / (right - centre)
    return torch.minimum(rising, falling).clamp_min(0.0).float()


def hann(n_fft: int) -> torch.Tensor:
    """The periodic Hann window (``torch.hann_window``'s default)."""
    return 0.5 - 0.5 * torch.cos(2 * math.pi * torch.arange(n_fft, dtype=torch.float64) / n_fft)


def dft_basis(config: LogMelConfig) -> torch.Tensor:
    """``[2 * bins, 1, n_fft]``: the windowed cosines, then the windowed sines, of the real DFT."""
    t = torch.arange(config.n_fft, dtype=torch.float64)
    k = torch.arange(config.bins, dtype=torch.float64)[:, None]
    angle = 2 * math.pi * k * t / config.n_fft
    window = hann(config.n_fft)
    return torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window]).unsqueeze(1).float()


def normalise(log_mel: torch.Tensor, floor: float = NORM_FLOOR) -> torch.Tensor:
    """Each clip's log-mel spectrogram shifted and scaled to mean 0, standard deviation 1 (recording gain and
    microphone level differ from speaker to speaker)."""
    mean = log_mel.mean(dim=(-2, -1), keepdim=True)
    std = log_mel.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (log_mel - mean) / (std + floor)


class LogMel(nn.Module):
    """Waveforms (any ``[N, ...]`` holding ``samples`` values per clip, in [-1, 1]) to normalised log-mel
    spectrograms ``[N, 1, n_mels, frames]``. No parameters: the DFT basis and the filters are non-persistent
    buffers, so checkpoints hold none of it and a subnet rebuilds it from its config."""

    def __init__(self, config: LogMelConfig):
        super().__init__()
        self.samples, self.hop, self.bins = config.samples, config.hop, config.bins
        self.log_floor, self.norm_floor = LOG_FLOOR, NORM_FLOOR  # attributes: TorchScript reads no globals
        self.register_buffer("basis", dft_basis(config), persistent=False)
        self.register_buffer("filters", mel_filters(config), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wave_ = x.reshape(x.shape[0], 1, self.samples).to(self.basis.dtype)
        spectrum = nn.functional.conv1d(wave_, self.basis, stride=self.hop)  # [N, 2 * bins, frames]
        power = spectrum[:, :self.bins].square() + spectrum[:, self.bins:].square()
        mel = torch.matmul(self.filters, power)  # [N, n_mels, frames]
        return normalise(torch.log(mel + self.log_floor), self.norm_floor).unsqueeze(1)


def log_mel_reference(x: torch.Tensor, config: LogMelConfig) -> torch.Tensor:
    """:class:`LogMel`'s output computed with ``torch.stft`` (float64): the oracle of its tests."""
    wave_ = x.reshape(x.shape[0], config.samples).double()
    spectrum = torch.stft(wave_, config.n_fft, config.hop, window=torch.hann_window(config.n_fft, dtype=torch.float64),
                          center=False, return_complex=True)
    mel = torch.matmul(mel_filters(config).double(), spectrum.abs().square())
    return normalise(torch.log(mel + LOG_FLOOR)).unsqueeze(1)


def read_wav(path: Path, sample_rate: int) -> torch.Tensor:
    """The int16 samples of a 16-bit PCM WAV file at ``sample_rate`` (several channels are averaged); anything
    else is refused in one line naming the file."""
    try:
        with wave.open(str(path), "rb") as reader:
            rate, width, channels = reader.getframerate(), reader.getsampwidth(), reader.getnchannels()
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError, OSError) as err:
        raise UserError(f"cannot read audio file {path} ({err}): it must be a PCM WAV file") from None
    if width != 2 or rate != sample_rate:
        raise UserError(f"audio file {path} is {8 * width}-bit at {rate} Hz; this space takes 16-bit PCM at "
                        f"{sample_rate} Hz: convert it (e.g. `sox IN -b 16 -r {sample_rate} OUT.wav`)")
    if len(frames) < 2 * channels:
        raise UserError(f"audio file {path} holds no samples: remove it or record it again")
    samples = torch.frombuffer(bytearray(frames[:len(frames) - len(frames) % (2 * channels)]), dtype=torch.int16)
    if channels > 1:
        samples = samples.view(-1, channels).float().mean(1).round().to(torch.int16)
    return samples


def fit_clip(samples: torch.Tensor, length: int) -> torch.Tensor:
    """``samples`` as exactly ``length`` values: padded with silence at the end, or cut around the middle."""
    if len(samples) >= length:
        start = (len(samples) - length) // 2
        return samples[start:start + length].clone()
    return torch.cat([samples, samples.new_zeros(length - len(samples))])


FSDD_NAME = "{label}_{speaker}_{index}.wav"
FSDD_TEST_INDICES = range(5)  # FSDD's official split: recordings 0-4 of each digit and speaker are the test set

Clips = tuple[torch.Tensor, torch.Tensor]  # int16 [N, 1, 1, samples], int64 labels [N]


def is_audio_folder(root: Path) -> bool:
    """Whether ``root`` holds a dataset of WAV files: FSDD's layout or train/ and test/ class folders of WAVs."""
    return bool(_flat_files(root)) or any((root / "train").glob("*/*.wav"))


def _flat_files(root: Path) -> list[Path]:
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    return sorted(folder.glob("*.wav")) if folder.is_dir() else []


def _stack(files: list[tuple[Path, int]], config: LogMelConfig) -> Clips:
    clips = torch.stack([fit_clip(read_wav(path, config.sample_rate), config.samples) for path, _ in files])
    return clips.view(len(files), 1, 1, config.samples), torch.tensor([label for _, label in files], dtype=torch.int64)


def _class_order(names: set[str]) -> list[str]:
    """Class names in order: numerically where all are numbers (FSDD's digits), else alphabetically."""
    return sorted(names, key=int) if all(n.isdigit() for n in names) else sorted(names)


def load_fsdd(root: Path, config: LogMelConfig) -> tuple[Clips, Clips, list[str]]:
    """(train, test, classes) of WAV files named ``{label}_{speaker}_{index}.wav`` in ``root/recordings`` (or
    ``root``), split as FSDD is: indices 0-4 are the test set. A file named otherwise is refused in one line."""
    parsed = []
    for path in _flat_files(root):
        parts = path.stem.split("_")
        if len(parts) != 3 or not parts[2].isdigit():
            raise UserError(f"audio file {path} is not named {FSDD_NAME} (as FSDD's are): rename it, or put the "
                            "files in train/<class>/ and test/<class>/ folders")
        parsed.append((path, parts[0], int(parts[2])))
    classes = _class_order({label for _, label, _ in parsed})
    number = {name: i for i, name in enumerate(classes)}
    train = [(path, number[label]) for path, label, index in parsed if index not in FSDD_TEST_INDICES]
    test = [(path, number[label]) for path, label, index in parsed if index in FSDD_TEST_INDICES]
    if not train or not test:
        raise UserError(f"audio dataset {root} has {len(train)} training and {len(test)} test recordings (indices "
                        f"{FSDD_TEST_INDICES.start}-{FSDD_TEST_INDICES.stop - 1} are the test set): both must hold some")
    return _stack(train, config), _stack(test, config), classes


def load_class_folders(root: Path, config: LogMelConfig) -> tuple[Clips, Clips, list[str]]:
    """(train, test, classes) of ``root/train/<class>/*.wav`` and ``root/test/<class>/*.wav``."""
    classes = _class_order({p.name for p in (root / "train").iterdir() if p.is_dir()})
    splits = []
    for split in ("train", "test"):
        files = [(path, i) for i, name in enumerate(classes) for path in sorted((root / split / name).glob("*.wav"))]
        if not files:
            raise UserError(f"audio dataset {root} has no WAV files in {split}/<class>/: it needs train/ and test/ "
                            "class folders of WAV files")
        splits.append(_stack(files, config))
    return splits[0], splits[1], classes


def load_audio(root: Path, config: LogMelConfig) -> tuple[Clips, Clips, list[str]]:
    """An audio dataset in either layout :func:`is_audio_folder` knows."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        return load_class_folders(root, config)
    return load_fsdd(root, config)


def count_log_mel(module: LogMel, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    """thop's count of a :class:`LogMel`: the DFT's and the filter bank's multiply-adds over every frame (thop
    counts no functional convolution by itself). Pass ``custom_ops=THOP_OPS`` to ``thop.profile``."""
    per_frame = module.basis.numel() + module.filters.numel()
    module.total_ops += torch.tensor([float(output.shape[0] * output.shape[-1] * per_frame)], dtype=torch.float64)


THOP_OPS = {LogMel: count_log_mel}
