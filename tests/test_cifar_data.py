"""CIFAR-10 as the field trains on it, read from the real data in ``../shared/data/cifar10`` on a small slice.

The slice is an ImageFolder of symlinks in a temporary folder (the data is never copied into the repository);
the image cache goes to a temporary ``$ONESHOT_CACHE``.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from supernet.data import ImageSet, batches, channel_stats, image_cache_path, load_splits, to_float

ROOT = Path(__file__).resolve().parent.parent
CIFAR = ROOT.parent / "shared" / "data" / "cifar10"
PER_CLASS = 20

pytestmark = pytest.mark.skipif(not (CIFAR / "train").is_dir(),
                                reason=f"CIFAR-10 is not at {CIFAR} (the shared data folder beside the repository)")


def link_slice(root: Path, per_class: int = PER_CLASS) -> Path:
    """An ImageFolder at ``root`` of the first ``per_class`` real images of each class and split, as symlinks."""
    for split in ("train", "test"):
        for folder in sorted((CIFAR / split).iterdir()):
            (root / split / folder.name).mkdir(parents=True)
            for file in sorted(folder.iterdir())[:per_class]:
                (root / split / folder.name / file.name).symlink_to(file)
    return root


@pytest.fixture
def cifar_slice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``PER_CLASS`` real images of each class and split, as symlinks; the cache in ``tmp_path/cache``."""
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path / "cache"))
    return link_slice(tmp_path / "cifar-slice")


def load(root: Path):
    return load_splits(root, channels=3, size=32, val_size=20)


def same(a: ImageSet, b: ImageSet) -> bool:
    return torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_cache_hit_equals_a_fresh_decode(cifar_slice: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load(cifar_slice)
    cache = image_cache_path(cifar_slice, 3, 32)
    assert cache.is_file() and cache.parent.parent == Path(str(cifar_slice.parent / "cache"))
    assert not list(cifar_slice.rglob("*.pt")), "the cache must never be written into the data folder"
    monkeypatch.setattr("supernet.data._read_image", lambda *a: pytest.fail("a cache hit decoded an image"))
    second = load(cifar_slice)
    assert all(same(getattr(first, s), getattr(second, s)) for s in ("train", "val", "test"))
    assert second.classes == first.classes and first.classes[0] == "airplane"
    assert first.train.images.dtype == torch.uint8 and first.train.labels.dtype == torch.int64
    assert len(first.train) + len(first.val) == len(first.test) == 10 * PER_CLASS


def test_changed_folder_is_decoded_again(cifar_slice: Path) -> None:
    before = load(cifar_slice)
    extra = sorted((CIFAR / "test" / "cat").iterdir())[PER_CLASS]
    (cifar_slice / "test" / "cat" / extra.name).symlink_to(extra)
    after = load(cifar_slice)
    assert len(after.test) == len(before.test) + 1
    assert same(after.test, load(cifar_slice).test)  # and the rewritten cache holds the new state


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"not a cache at all",
                                    lambda b: b[:100] + bytes(len(b) - 100)])
def test_corrupt_cache_is_decoded_again_with_a_warning(cifar_slice: Path, capsys: pytest.CaptureFixture[str],
                                                       damage) -> None:
    fresh = load(cifar_slice)
    cache = image_cache_path(cifar_slice, 3, 32)
    cache.write_bytes(damage(cache.read_bytes()))
    capsys.readouterr()
    again = load(cifar_slice)
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"image cache {cache} is unusable" in warnings[0], err
    assert "Traceback" not in err
    assert same(fresh.train, again.train) and same(fresh.test, again.test)
    assert [p.name for p in cache.parent.iterdir()] == [cache.name], "a half-written file was left behind"
    capsys.readouterr()
    load(cifar_slice)
    assert "warning" not in capsys.readouterr().err, "the cache was not rewritten"


def test_foreign_cache_file_is_a_miss(cifar_slice: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = image_cache_path(cifar_slice, 3, 32)
    cache.parent.mkdir(parents=True)
    torch.save({"format": "something else", "train": torch.zeros(3)}, cache)
    splits = load(cifar_slice)
    assert "is unusable (not an image cache" in capsys.readouterr().err
    assert len(splits.test) == 10 * PER_CLASS


def reference_crop(image: torch.Tensor, padding: int, dy: int, dx: int) -> torch.Tensor:
    """The padded crop written out plainly: pad one image with zeros, slice the window at (dy, dx)."""
    _, height, width = image.shape
    return F.pad(image, (padding,) * 4)[:, dy:dy + height, dx:dx + width]


def test_crop_and_flip_are_deterministic_true_padded_crops(cifar_slice: Path) -> None:
    data = load(cifar_slice).train
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(3))
    run = lambda start=0: list(batches(data, 64, order=order, start=start, flip_seed=5, crop_padding=4,  # noqa: E731
                                       crop_seed=5))
    first, again, resumed = run(), run(), run(start=1)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert torch.equal(first[1][0], resumed[0][0]), "a resumed run sees other crops"
    other_seed = next(iter(batches(data, 64, order=order, flip_seed=5, crop_padding=4, crop_seed=6)))[0]
    assert not torch.equal(first[0][0], other_seed)
    windows, flips = set(), 0
    for image, out in zip(to_float(data.images[order[:64]]), first[0][0]):
        matches = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
                   if torch.equal(reference_crop(image, 4, dy, dx).flip(-1) if flip else reference_crop(image, 4, dy, dx),
                                  out)]
        assert matches, "an output is no padded crop of its image"
        windows.add(matches[0][:2])
        flips += matches[0][2]
    assert len(windows) > 20 and 10 < flips < 54, (len(windows), flips)
    assert (first[0][0] == 0).any(), "no padding ever showed"


def test_crop_matches_the_reference_implementation(cifar_slice: Path) -> None:
    images = load(cifar_slice).test.images[:32]
    generator = torch.Generator().manual_seed(11)
    offsets = torch.randint(0, 9, (32, 2), generator=torch.Generator().manual_seed(11))
    from supernet.data import random_crop
    out = random_crop(images, 4, generator)
    expected = torch.stack([reference_crop(img, 4, int(dy), int(dx)) for img, (dy, dx) in zip(images, offsets)])
    assert out.dtype == torch.uint8 and torch.equal(out, expected)


def test_normalisation_is_per_channel_standard_on_the_training_split(cifar_slice: Path) -> None:
    splits = load(cifar_slice)
    stats = channel_stats(splits.train)
    mean, std = (torch.tensor(v) for v in stats)
    assert len(stats[0]) == 3 and not torch.allclose(mean, mean[0].expand(3), atol=1e-3)  # really per channel
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465]), atol=0.08)  # near CIFAR-10's published
    x = torch.cat([x for x, _ in batches(splits.train, 50, normalize=stats)])
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    plain = next(iter(batches(splits.train, 50)))[0]
    assert plain.min() >= 0 and plain.max() <= 1, "without normalize the inputs stay in [0, 1]"


def test_train_crop_padding_flag_is_recorded_and_resumable(cifar_slice: Path) -> None:
    from supernet.train import epoch_batches, parse_args
    config = parse_args(["--crop-padding", "4", "--batch-size", "32"])[0]
    assert config.crop_padding == 4 and parse_args([])[0].crop_padding == 0  # off unless asked: runs as before
    data = load(cifar_slice).train
    whole = [x for x, _ in epoch_batches(data, config, epoch=2)]
    resumed = [x for x, _ in epoch_batches(data, config, epoch=2, start=2)]
    assert all(torch.equal(a, b) for a, b in zip(whole[2:], resumed)) and len(whole) == len(resumed) + 2
    plain = parse_args(["--batch-size", "32"])[0]
    assert not torch.equal(whole[0], next(iter(epoch_batches(data, plain, epoch=2)))[0]), "the flag changed nothing"


def test_unwritable_cache_folder_is_a_warning_not_a_failed_load(cifar_slice: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    blocker = cifar_slice.parent / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ONESHOT_CACHE", str(blocker / "cache"))  # a folder under a regular file cannot be made
    splits = load(cifar_slice)
    err = capsys.readouterr().err
    assert len(splits.test) == 10 * PER_CLASS and "warning: images not cached: cannot create folder" in err, err
