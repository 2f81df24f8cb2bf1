"""Datasets held in memory as uint8 tensors, with fixed train / validation / test splits.

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist`` (IDX files); ``--data DIR`` also takes
an ImageFolder-style directory (``DIR/train/<class>/*.png`` and ``DIR/test/<class>/*.png``). The validation
split is a fixed, seeded draw from the training images and is what search sees; the test split is only for
final numbers.
"""
from __future__ import annotations

import gzip
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from supernet.errors import UserError

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class ImageSet:
    """Images as uint8 ``[N, C, H, W]`` and labels as int64 ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index])


@dataclass
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    classes: tuple[str, ...]
    source: str


def _read_idx(path: Path, magic: int) -> torch.Tensor:
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as err:  # zlib.error: damage inside the compressed stream
        raise UserError(f"dataset file {path} is unreadable or corrupt ({err}); reinstall it with "
                        "`apt-get install --reinstall dataset-fashion-mnist`") from None
    ndim = magic & 0xFF
    if len(data) < 4 + 4 * ndim or struct.unpack(">I", data[:4])[0] != magic:
        raise UserError(f"dataset file {path} is not an IDX file of the expected kind")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = data[4 + 4 * ndim:]
    count = 1
    for n in shape:
        count *= n
    if len(body) != count:
        raise UserError(f"dataset file {path} is truncated ({len(body)} of {count} bytes)")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def _load_idx(root: Path, split: str) -> ImageSet:
    image_file, label_file = (root / name for name in IDX_FILES[split])
    images = _read_idx(image_file, 0x00000803)
    labels = _read_idx(label_file, 0x00000801).long()
    if len(images) != len(labels):
        raise UserError(f"dataset {root}: {len(images)} images but {len(labels)} labels in the {split} split")
    if len(labels) and labels.max() >= len(FASHION_CLASSES):  # else training stops at the first batch holding one
        raise UserError(f"dataset file {label_file} has label {labels.max().item()}, but Fashion-MNIST has "
                        f"{len(FASHION_CLASSES)} classes: it is corrupt")
    return ImageSet(images.unsqueeze(1).contiguous(), labels)


MAX_IMAGE_PIXELS = 8192 * 8192  # larger images are refused before they are decoded (a decompression bomb)


def _entries(folder: Path) -> list[Path]:
    """What ``folder`` holds, sorted; a folder that cannot be listed is one line."""
    try:
        return sorted(folder.iterdir())
    except OSError as err:
        raise UserError(f"cannot list dataset folder {folder}: {err.strerror or err}") from None


def _read_image(file: Path, channels: int, size: int) -> torch.Tensor:
    """One image file as uint8 ``[channels, size, size]``; an unreadable or oversized one is one line.

    The file is user data, so whatever the decoder raises on it (PIL raises ``OSError``, ``ValueError``,
    ``SyntaxError``, ``struct.error``... on damaged files) is a bad input, not a bug here. The size is checked
    from the header before any pixel is decoded; PIL's own decompression-bomb warning counts as a refusal.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise UserError(f"image {file} is {img.width}x{img.height} pixels, more than this tool decodes "
                                    f"({MAX_IMAGE_PIXELS // 2 ** 20} Mpixel): shrink it or leave it out")
                img = img.convert("L" if channels == 1 else "RGB").resize((size, size))
                pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise UserError(f"image {file} is too large to decode safely ({err}): shrink it or leave it out") from None
    except Exception as err:  # noqa: BLE001  (a damaged file may make the decoder raise anything)
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UserError(f"image {file} cannot be read ({reason}): replace or remove it") from None
    return pixels.reshape(size, size, channels).permute(2, 0, 1)


def _load_folder(root: Path, split: str, classes: list[str], channels: int, size: int) -> ImageSet:
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in _entries(root / split / name):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                images.append(_read_image(file, channels, size))
                labels.append(label)
    if not images:
        raise UserError(f"dataset folder {root / split} holds no images")
    return ImageSet(torch.stack(images).contiguous(), torch.tensor(labels))


def _folder_classes(root: Path, num_classes: int | None) -> list[str]:
    """The class names of an ImageFolder dataset: ``train/``'s folders, which ``test/`` must have too."""
    names = [p.name for p in _entries(root / "train") if p.is_dir()]
    if not names:
        raise UserError(f"dataset folder {root / 'train'} has no class folders")
    tested = [p.name for p in _entries(root / "test") if p.is_dir()]
    missing, extra = sorted(set(names) - set(tested)), sorted(set(tested) - set(names))
    if missing or extra:
        which = f"lacks class folder {missing[0]!r} that train/ has" if missing else \
            f"has class folder {extra[0]!r} that train/ lacks"
        raise UserError(f"dataset folder {root / 'test'} {which}: both splits need the same classes")
    _check_class_count(root, len(names), num_classes)
    return names


def _check_class_count(root: Path, count: int, num_classes: int | None) -> None:
    """Refuse a dataset with more classes than the model has outputs: its labels would not fit."""
    if num_classes is not None and count > num_classes:
        raise UserError(f"dataset {root} has {count} classes, but the model has {num_classes} outputs: use a "
                        f"dataset of at most {num_classes} classes")


def load_splits(data: str | Path = DEFAULT_DATA, *, channels: int = 1, size: int = 28, val_size: int = 5000,
                seed: int = 0, num_classes: int | None = None) -> Splits:
    """Load a dataset and cut the fixed validation split (``val_size`` training images, seeded).

    ``num_classes``: the model's outputs; a dataset with more classes is refused (its labels would not fit).
    """
    root = Path(data)
    if (root / IDX_FILES["train"][0]).exists():
        train, test = _load_idx(root, "train"), _load_idx(root, "test")
        classes: tuple[str, ...] = FASHION_CLASSES
        _check_class_count(root, len(classes), num_classes)
        if train.images.shape[1:] != (channels, size, size):
            raise UserError(f"dataset {root} has {tuple(train.images.shape[1:])} images, the space needs "
                            f"{(channels, size, size)}")
    elif (root / "train").is_dir() and (root / "test").is_dir():
        names = _folder_classes(root, num_classes)
        train = _load_folder(root, "train", names, channels, size)
        test = _load_folder(root, "test", names, channels, size)
        classes = tuple(names)
    elif str(root) == DEFAULT_DATA:
        raise UserError(f"Fashion-MNIST not found in {root}: install it with "
                        "`apt-get install dataset-fashion-mnist` or pass --data DIR")
    else:
        raise UserError(f"no dataset in {root}: expected Fashion-MNIST IDX files or train/ and test/ "
                        "ImageFolder-style class folders")
    if not 0 < val_size < len(train):
        raise UserError(f"validation size {val_size} must be between 1 and {len(train) - 1}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return Splits(train.subset(order[val_size:]), train.subset(order[:val_size]), test, classes, str(root))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to the float input every model here takes: values in [0, 1]."""
    return images.float().div_(255.0)


def batches(data: ImageSet, batch_size: int, *, order: torch.Tensor | None = None, start: int = 0,
            flip_seed: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield float ``(images, labels)`` batches in ``order`` (default: as stored), from batch ``start``.

    With ``flip_seed``, half of the images are flipped horizontally; the draw depends only on the seed and
    the batch's index, so a run resumed mid-epoch sees the same batches as one that was not interrupted.
    """
    index = torch.arange(len(data)) if order is None else order
    for number, first in enumerate(range(start * batch_size, len(index), batch_size), start):
        pick = index[first:first + batch_size]
        images = to_float(data.images[pick])
        if flip_seed is not None:
            generator = torch.Generator().manual_seed(flip_seed * 1_000_003 + number)
            flip = torch.rand(len(pick), generator=generator) < 0.5
            images[flip] = images[flip].flip(-1)
        yield images, data.labels[pick]
