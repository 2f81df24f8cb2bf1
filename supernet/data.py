"""Datasets held in memory as uint8 tensors, with fixed train / validation / test splits.

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist`` (IDX files); ``--data DIR`` also takes
an ImageFolder-style directory (``DIR/train/<class>/*.png`` and ``DIR/test/<class>/*.png``). Spaces with an
audio front end take WAV files instead (:mod:`supernet.audio`: FSDD's layout or class folders), held as int16
clips ``[N, 1, 1, samples]`` in the same :class:`ImageSet`, so batching and scoring treat both alike; text spaces
take a folder of TSV files (:mod:`supernet.text`), held as int32 token ids ``[N, 1, 1, max_len]``. The validation
split is a fixed, seeded draw from the training images and is what search sees; the test split is only for
final numbers.

An ImageFolder is decoded once: its uint8 images, labels and class names are cached in the project's cache
folder (:func:`supernet.io.cache_dir`, never in the data folder, which may be read-only), keyed on the folder's
resolved path and the image shape, and checked against a fingerprint of its file listing (names, sizes, mtimes)
so a changed folder is decoded again. A damaged cache is a warning and a fresh decode, never a failed load.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import stat
import struct
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from tqdm import tqdm

from supernet.audio import is_audio_folder, load_audio
from supernet.errors import UserError, gist
from supernet.frontend import LogMelConfig, TokenConfig
from supernet.io import atomic_serialize, cache_dir
from supernet.text import is_text_folder, load_text

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class ImageSet:
    """Images as uint8 ``[N, C, H, W]`` (or audio clips as int16 ``[N, 1, 1, samples]``, or sentences as int32
    token ids ``[N, 1, 1, max_len]``) and labels as int64 ``[N]``."""

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
                img = img.convert("L" if channels == 1 else "RGB")
                if img.size != (size, size):
                    img = img.resize((size, size))
                pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise UserError(f"image {file} is too large to decode safely ({err}): shrink it or leave it out") from None
    except Exception as err:  # noqa: BLE001  (a damaged file may make the decoder raise anything)
        reason = gist(str(err)) or type(err).__name__
        raise UserError(f"image {file} cannot be read ({reason}): replace or remove it") from None
    return pixels.reshape(size, size, channels).permute(2, 0, 1)


def _listing(root: Path, split: str, classes: list[str]) -> list[tuple[Path, int]]:
    """The image files of ``root/split`` with their labels, in class order then name order."""
    return [(file, label) for label, name in enumerate(classes) for file in _entries(root / split / name)
            if file.suffix.lower() in IMAGE_SUFFIXES]


def _decode(root: Path, split: str, files: list[tuple[Path, int]], channels: int, size: int) -> ImageSet:
    """Decode ``files`` (a :func:`_listing`) with a progress bar; a split without images is one line."""
    if not files:
        raise UserError(f"dataset folder {root / split} holds no images")
    bar = tqdm(files, desc=f"decoding {root / split}", unit="img", leave=False, mininterval=1.0,
               disable=len(files) < 1000)
    images = [_read_image(file, channels, size) for file, _ in bar]
    return ImageSet(torch.stack(images).contiguous(), torch.tensor([label for _, label in files], dtype=torch.int64))


CACHE_FORMAT = "oneshot-nas image cache 1"  # bump when what a cache file holds changes


def _fingerprint(root: Path, listings: dict[str, list[tuple[Path, int]]]) -> str:
    """A hash of what decoding would read: every file's name relative to ``root``, label, size and mtime."""
    digest = hashlib.sha256()
    for split, files in listings.items():
        for file, label in files:
            try:
                info = file.stat()
            except OSError as err:
                raise UserError(f"cannot read image {file}: {err.strerror or err}") from None
            digest.update(f"{split}\0{file.relative_to(root)}\0{label}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def image_cache_path(root: Path, channels: int, size: int) -> Path:
    """The cache file of ImageFolder ``root`` decoded to ``channels`` x ``size`` x ``size``: in the project's cache
    folder, named by the folder's resolved path and the image shape (the contents' fingerprint is inside)."""
    key = hashlib.sha256(f"{root.resolve()}\0{channels}\0{size}".encode()).hexdigest()[:16]
    return cache_dir("data") / f"{root.resolve().name or 'root'}-{channels}x{size}-{key}.pt"


def _read_cache(path: Path, fingerprint: str, classes: list[str], channels: int,
                size: int) -> dict[str, ImageSet] | None:
    """The splits cached in ``path`` if it holds exactly this folder's decoded images, else None.

    A missing file or one made from another state of the folder is a plain miss; a file that cannot be read
    or is not a cache of this tool (truncated, corrupt, foreign) is a miss with a one-line warning.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ValueError("not a regular file")
        cached = torch.load(path, weights_only=True)
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001  (a damaged file may make the unpickler raise anything)
        return _cache_warning(path, (str(err).strip().splitlines() or [type(err).__name__])[0][:120])
    if not isinstance(cached, dict) or cached.get("format") != CACHE_FORMAT:
        return _cache_warning(path, "not an image cache of this version")
    if cached.get("fingerprint") != fingerprint or cached.get("classes") != classes:
        return None  # the folder changed since the cache was written
    splits = {}
    for split in ("train", "test"):
        images, labels = cached.get(split, {}).get("images"), cached.get(split, {}).get("labels")
        if not (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor) and images.dtype == torch.uint8
                and images.shape[1:] == (channels, size, size) and labels.dtype == torch.int64
                and labels.shape == images.shape[:1] and (len(labels) == 0 or 0 <= labels.min() <= labels.max()
                                                          < len(classes))):
            return _cache_warning(path, f"its {split} split is malformed")
        splits[split] = ImageSet(images, labels)
    return splits


def _cache_warning(path: Path, reason: str) -> None:
    print(f"warning: image cache {path} is unusable ({reason}); decoding the images again", file=sys.stderr)
    return None


def _write_cache(path: Path, fingerprint: str, classes: list[str], splits: dict[str, ImageSet]) -> None:
    """Save decoded ``splits`` atomically; a cache that cannot be written is a warning, not a failed load."""
    payload = {"format": CACHE_FORMAT, "fingerprint": fingerprint, "classes": classes,
               **{split: {"images": data.images, "labels": data.labels} for split, data in splits.items()}}
    try:
        atomic_serialize(path, lambda buffer: torch.save(payload, buffer))
    except UserError as err:
        print(f"warning: images not cached: {err}", file=sys.stderr)


def _load_folder(root: Path, classes: list[str], channels: int, size: int) -> tuple[ImageSet, ImageSet]:
    """The train and test splits of ImageFolder ``root``, decoded once and then read from the image cache."""
    listings = {split: _listing(root, split, classes) for split in ("train", "test")}
    fingerprint = _fingerprint(root, listings)
    path = image_cache_path(root, channels, size)
    splits = _read_cache(path, fingerprint, classes, channels, size)
    if splits is None:
        splits = {split: _decode(root, split, files, channels, size) for split, files in listings.items()}
        _write_cache(path, fingerprint, classes, splits)
    return splits["train"], splits["test"]


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


def _check_trained(root: Path, count: int, trained: tuple[int, str] | None) -> None:
    """Refuse to score a trained model on a dataset of another number of classes than it learnt."""
    if trained is not None and count != trained[0]:
        raise UserError(f"dataset {root} has {count} classes, but {trained[1]} was trained on {trained[0]}: pass "
                        f"the --data it was trained on (or one with the same {trained[0]} classes)")


def load_splits(data: str | Path = DEFAULT_DATA, *, channels: int = 1, size: int = 28, val_size: int = 5000,
                seed: int = 0, num_classes: int | None = None, trained: tuple[int, str] | None = None,
                audio: LogMelConfig | None = None, text: TokenConfig | None = None) -> Splits:
    """Load a dataset and cut the fixed validation split (``val_size`` training images, seeded).

    ``audio``: the space's audio front end; the dataset must then be WAV files, read as clips of its
    ``samples`` at its sample rate (``channels`` and ``size`` are then 1 and ``samples``, as
    :func:`supernet.family.data_format` gives them).

    ``text``: the space's token input; the dataset must then be a folder of TSV files (:mod:`supernet.text`).

    ``num_classes``: the model's outputs; a dataset with more classes is refused (its labels would not fit).
    ``trained``: (classes, what) of a trained model about to be scored on the data, e.g. ``(10, "checkpoint
    x.pt")``: a dataset with another number of classes is refused, naming both (its accuracy would be noise).
    """
    root = Path(data)
    holds_audio = root.is_dir() and is_audio_folder(root)
    holds_text = root.is_dir() and is_text_folder(root)
    if text is not None or holds_text:
        train, test, classes = _load_text_splits(root, text, holds_text, num_classes, trained)
    elif audio is not None or holds_audio:
        train, test, classes = _load_audio_splits(root, audio, holds_audio, num_classes, trained)
    elif (root / IDX_FILES["train"][0]).exists():
        train, test = _load_idx(root, "train"), _load_idx(root, "test")
        classes: tuple[str, ...] = FASHION_CLASSES
        _check_class_count(root, len(classes), num_classes)
        _check_trained(root, len(classes), trained)
        if train.images.shape[1:] != (channels, size, size):
            raise UserError(f"dataset {root} has {tuple(train.images.shape[1:])} images, the space needs "
                            f"{(channels, size, size)}")
    elif (root / "train").is_dir() and (root / "test").is_dir():
        names = _folder_classes(root, num_classes)
        _check_trained(root, len(names), trained)
        train, test = _load_folder(root, names, channels, size)
        classes = tuple(names)
    elif str(root) == DEFAULT_DATA:
        raise UserError(f"Fashion-MNIST not found in {root}: install it with "
                        "`apt-get install dataset-fashion-mnist` or pass --data DIR")
    else:
        raise UserError(f"no dataset in {root}: expected Fashion-MNIST IDX files or train/ and test/ "
                        "ImageFolder-style class folders")
    if not 0 < val_size < len(train):
        raise UserError(f"dataset {root} has {len(train)} training images, too few to hold out a validation split of "
                        f"{val_size} (--val-size): lower --val-size to at most {len(train) - 1} (search, retrain and "
                        "export take it from the checkpoint: give them the --data it was trained on)")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return Splits(train.subset(order[val_size:]), train.subset(order[:val_size]), test, classes, str(root))


def _load_audio_splits(root: Path, audio: LogMelConfig | None, holds_audio: bool, num_classes: int | None,
                       trained: tuple[int, str] | None) -> tuple[ImageSet, ImageSet, tuple[str, ...]]:
    """The train and test clips of the audio dataset at ``root`` (``holds_audio``: it has WAV files), for a
    space whose front end is ``audio``."""
    if audio is None:
        raise UserError(f"dataset {root} holds audio (WAV files), but this space takes images: train a space with "
                        "an audio front end (--space mbv3-fsdd)")
    if not holds_audio:
        raise UserError(f"no audio dataset in {root}: this space takes WAV files, named as FSDD's "
                        "({label}_{speaker}_{index}.wav, in recordings/ or the folder itself) or in train/<class>/ "
                        "and test/<class>/ folders")
    (train_clips, train_labels), (test_clips, test_labels), names = load_audio(root, audio)
    _check_class_count(root, len(names), num_classes)
    _check_trained(root, len(names), trained)
    return ImageSet(train_clips, train_labels), ImageSet(test_clips, test_labels), tuple(names)


def _load_text_splits(root: Path, text: TokenConfig | None, holds_text: bool, num_classes: int | None,
                      trained: tuple[int, str] | None) -> tuple[ImageSet, ImageSet, tuple[str, ...]]:
    """The train and test sentences of the text dataset at ``root`` (``holds_text``: it has a train.tsv)."""
    if text is None:
        raise UserError(f"dataset {root} holds text (train.tsv), but this space takes "
                        "images or audio: train a text space (--space tfm-sst2)")
    if not holds_text:
        raise UserError(f"no text dataset in {root}: this space takes a folder with train.tsv and test.tsv (or "
                        "dev.tsv), each line 'label<TAB>sentence'")
    (train_ids, train_labels), (test_ids, test_labels), names, _ = load_text(root, text)
    _check_class_count(root, len(names), num_classes)
    _check_trained(root, len(names), trained)
    return ImageSet(train_ids, train_labels), ImageSet(test_ids, test_labels), tuple(names)


Normalization = tuple[tuple[float, ...], tuple[float, ...]]  # per-channel (mean, std) of inputs in [0, 1]


def channel_stats(data: ImageSet, chunk: int = 4096) -> Normalization:
    """Per-channel mean and standard deviation of ``data``'s pixels scaled to [0, 1] (for the training split,
    the normalisation CIFAR-10 is trained with); summed in float64, ``chunk`` images at a time."""
    channels = data.images.shape[1]
    total, squares = torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)
    for first in range(0, len(data), chunk):
        pixels = data.images[first:first + chunk].to(torch.float64).div_(255.0)
        total += pixels.sum(dim=(0, 2, 3))
        squares += pixels.square().sum(dim=(0, 2, 3))
    count = len(data) * data.images.shape[2] * data.images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


def to_float(images: torch.Tensor, normalize: Normalization | None = None) -> torch.Tensor:
    """uint8 images to the float input a model takes: values in [0, 1], or with ``normalize = (mean, std)``
    shifted and scaled per channel (``(x - mean) / std``), as a model trained with that normalisation expects.
    int16 audio clips become samples in [-1, 1); int32 token ids stay ids (exact in float32), which text
    networks read back as integers."""
    if images.dtype == torch.int16:
        return images.float().div_(32768.0)
    if images.dtype == torch.int32:
        return images.float()
    x = images.float().div_(255.0)
    if normalize is not None:
        mean, std = (torch.tensor(v, dtype=x.dtype).view(1, -1, 1, 1) for v in normalize)
        x.sub_(mean).div_(std)
    return x


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``images`` (``[N, C, H, W]``) zero-padded by ``padding`` pixels on every side and cropped
    back to ``H x W`` at an offset drawn from ``generator`` (uniform over the ``(2 * padding + 1) ** 2``)."""
    n, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    rows = (offsets[:, :1] + torch.arange(height)).view(n, height, 1)
    cols = (offsets[:, 1:] + torch.arange(width)).view(n, 1, width)
    return padded[torch.arange(n).view(n, 1, 1), :, rows, cols].permute(0, 3, 1, 2).contiguous()


CROP_STREAM = 1 << 62  # crop draws are seeded apart from the flips' (seed * 1_000_003 + batch) seeds


def batches(data: ImageSet, batch_size: int, *, order: torch.Tensor | None = None, start: int = 0,
            flip_seed: int | None = None, crop_padding: int = 0, crop_seed: int | None = None,
            normalize: Normalization | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield float ``(images, labels)`` batches in ``order`` (default: as stored), from batch ``start``.

    With ``flip_seed``, half of the images are flipped horizontally; with ``crop_padding`` (and ``crop_seed``),
    each image is a random crop of itself zero-padded by that many pixels (CIFAR's 4-pixel padded crop). Every
    draw depends only on its seed and the batch's index, so a run resumed mid-epoch sees the same batches as
    one that was not interrupted. ``normalize``: see :func:`to_float`; padding is black before normalisation.
    Flips and crops are image augmentations: audio clips and sentences are never flipped (that would play
    them backwards), and a crop of them is refused.
    """
    if crop_padding and crop_seed is None:
        raise ValueError("crop_padding needs a crop_seed")
    if data.images.dtype != torch.uint8:
        if crop_padding:
            kind = "audio" if data.images.dtype == torch.int16 else "text"
            raise UserError(f"--crop-padding crops images, but this dataset is {kind}: leave it at 0")
        flip_seed = None
    index = torch.arange(len(data)) if order is None else order
    for number, first in enumerate(range(start * batch_size, len(index), batch_size), start):
        pick = index[first:first + batch_size]
        raw = data.images[pick]
        if crop_padding:
            raw = random_crop(raw, crop_padding, torch.Generator().manual_seed(CROP_STREAM + crop_seed * 1_000_003 + number))
        images = to_float(raw, normalize)
        if flip_seed is not None:
            generator = torch.Generator().manual_seed(flip_seed * 1_000_003 + number)
            flip = torch.rand(len(pick), generator=generator) < 0.5
            images[flip] = images[flip].flip(-1)
        yield images, data.labels[pick]
