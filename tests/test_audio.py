"""Audio spaces (supernet.audio): the log-mel front end against torch.stft, WAV reading and its refusals, and
FSDD's layout and split on a slice of the real recordings."""
from __future__ import annotations

import math
import wave
from pathlib import Path

import pytest
import torch

from supernet.audio import LogMel, fit_clip, log_mel_reference, mel_filters, read_wav
from supernet.data import batches, load_splits
from supernet.errors import UserError
from supernet.family import data_format, get_space, input_description
from supernet.frontend import LogMelConfig
from tests.conftest import FSDD, NO_FSDD, make_fsdd_slice

CONFIGS = [LogMelConfig(), LogMelConfig(samples=4000, n_fft=200, hop=80, n_mels=24),
           LogMelConfig(sample_rate=16000, samples=3000, n_fft=512, hop=512, n_mels=64)]


def clips(config: LogMelConfig, count: int = 3, seed: int = 0) -> torch.Tensor:
    """Speech-like test clips: a few tones with random amplitudes, some noise and a silent tail."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(config.samples) / config.sample_rate
    freqs = torch.rand(count, 3, 1, generator=generator) * config.sample_rate / 2.5 + 50
    x = (torch.rand(count, 3, 1, generator=generator) * torch.sin(2 * math.pi * freqs * t)).sum(1)
    x = x + 0.01 * torch.randn(count, config.samples, generator=generator)
    x[:, -config.samples // 4:] = 0
    return (x / 3).view(count, 1, 1, config.samples)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.sample_rate}hz-{c.n_fft}-{c.hop}-{c.n_mels}")
def test_log_mel_equals_the_stft_reference_in_values_and_gradients(config: LogMelConfig) -> None:
    x = clips(config)
    layer = LogMel(config)
    out = layer(x)
    assert out.shape == (3, *config.feature_shape)
    torch.testing.assert_close(out.double(), log_mel_reference(x, config), atol=2e-4, rtol=0)
    scripted = torch.jit.script(layer)
    torch.testing.assert_close(scripted(x.view(3, -1)), out)  # any [N, ...] of samples: [N, samples] too
    a = x.double().requires_grad_()
    b = x.clone().requires_grad_()
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (log_mel_reference(a, config) * weights.double()).sum().backward()
    (layer(b) * weights).sum().backward()
    torch.testing.assert_close(b.grad.double(), a.grad, atol=1e-3 * a.grad.abs().max().item(), rtol=0)


def test_a_tone_lands_in_the_band_centred_nearest_it() -> None:
    config = LogMelConfig()
    filters = mel_filters(config)
    assert filters.shape == (config.n_mels, config.bins) and filters.min() >= 0 and filters.max() <= 1 + 1e-6
    bin_hz = config.sample_rate / config.n_fft
    centres = filters.argmax(1).double() * bin_hz
    for hz in (300.0, 1000.0, 2500.0):
        t = torch.arange(config.samples) / config.sample_rate
        tone = torch.sin(2 * math.pi * hz * t).view(1, -1)
        band = LogMel(config)(tone)[0, 0].mean(1).argmax().item()
        assert abs(centres[band].item() - hz) <= (centres - hz).abs().min().item() + bin_hz


def test_a_silent_clip_stays_finite() -> None:
    out = LogMel(LogMelConfig())(torch.zeros(2, 8000))
    assert torch.isfinite(out).all() and out.abs().max() < 1e-2


def test_clips_are_padded_at_the_end_or_cut_around_the_middle() -> None:
    samples = torch.arange(1, 11, dtype=torch.int16)
    assert fit_clip(samples, 4).tolist() == [4, 5, 6, 7]
    assert fit_clip(samples[:3], 5).tolist() == [1, 2, 3, 0, 0]


def write_wav(path: Path, samples: torch.Tensor, rate: int = 8000, width: int = 2, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(samples.numpy().astype({1: "uint8", 2: "<i2"}[width]).tobytes())
    return path


def test_wav_files_are_read_and_the_wrong_ones_named(tmp_path: Path) -> None:
    tone = (torch.sin(torch.arange(800) / 5) * 20000).to(torch.int16)
    assert torch.equal(read_wav(write_wav(tmp_path / "a.wav", tone), 8000), tone)
    stereo = torch.stack([tone, tone // 2], 1).flatten()
    assert read_wav(write_wav(tmp_path / "s.wav", stereo, channels=2), 8000).tolist() == \
        ((tone.float() + (tone // 2).float()) / 2).round().to(torch.int16).tolist()
    cases = {write_wav(tmp_path / "rate.wav", tone, rate=16000): "16-bit at 16000 Hz; this space takes 16-bit PCM at 8000",
             write_wav(tmp_path / "byte.wav", torch.full((80,), 128), width=1): "8-bit at 8000 Hz",
             write_wav(tmp_path / "empty.wav", tone[:0]): "holds no samples"}
    (tmp_path / "text.wav").write_text("not audio")
    cases[tmp_path / "text.wav"] = "cannot read audio file"
    for path, message in cases.items():
        with pytest.raises(UserError, match=message) as err:
            read_wav(path, 8000)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_class_folders_and_misnamed_files(tmp_path: Path) -> None:
    config = get_space("mbv3-fsdd").config
    tone = (torch.sin(torch.arange(3000) / 3) * 9000).to(torch.int16)
    for split, count in (("train", 4), ("test", 2)):
        for name in ("yes", "no"):
            for i in range(count):
                write_wav(tmp_path / "words" / split / name / f"{i}.wav", tone * (i + 1) // 4)
    splits = load_splits(tmp_path / "words", **data_format(config), val_size=2)
    assert splits.classes == ("no", "yes") and (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 4)
    assert splits.train.images.dtype == torch.int16 and splits.train.images.shape[1:] == (1, 1, 8000)
    write_wav(tmp_path / "flat" / "recordings" / "3_ann_x.wav", tone)
    with pytest.raises(UserError, match=r"3_ann_x.wav is not named \{label\}_\{speaker\}_\{index\}.wav"):
        load_splits(tmp_path / "flat", **data_format(config), val_size=1)
    with pytest.raises(UserError, match="holds audio .WAV files., but this space takes images"):
        load_splits(tmp_path / "words", val_size=2)
    with pytest.raises(UserError, match="no audio dataset in"):
        load_splits(tmp_path / "nothing", **data_format(config), val_size=2)


def test_audio_batches_are_never_flipped_and_crops_are_refused(tmp_path: Path) -> None:
    config = get_space("mbv3-fsdd").config
    tone = (torch.sin(torch.arange(8000) / 3) * 9000).to(torch.int16)
    for split in ("train", "test"):
        for name in ("a", "b"):
            write_wav(tmp_path / split / name / "0.wav", tone)
    data = load_splits(tmp_path, **data_format(config), val_size=1).train
    x, _ = next(batches(data, 4, flip_seed=0))
    assert torch.equal(x, data.images.float() / 32768)
    with pytest.raises(UserError, match="--crop-padding crops images, but this dataset is audio"):
        next(batches(data, 4, crop_padding=2, crop_seed=0))
    assert input_description(config) == {"shape": ["N", 1, 1, 8000], "dtype": "float32", "range": [-1.0, 1.0],
                                          "kind": "audio", "sample_rate": 8000}


@pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=NO_FSDD)
def test_fsdd_official_split_on_a_slice_of_the_real_recordings(tmp_path: Path) -> None:
    root = make_fsdd_slice(tmp_path / "fsdd", per_digit=6)
    splits = load_splits(root, **data_format(get_space("mbv3-fsdd").config), val_size=20)
    assert splits.classes == tuple(str(d) for d in range(10))
    assert len(splits.test) == 10 * 2 * 5 and len(splits.train) + len(splits.val) == 10 * 2 * 6
    assert splits.test.labels.bincount().tolist() == [10] * 10
    assert splits.train.images.abs().amax(dim=(1, 2, 3)).min() > 0  # every clip holds sound
