import gzip
from pathlib import Path

import pytest
import torch
from PIL import Image

from supernet.data import DEFAULT_DATA, batches, load_splits
from supernet.errors import UserError
from tests.conftest import make_fake_fmnist


def test_idx_splits_are_fixed_and_disjoint(tmp_path: Path) -> None:
    root = make_fake_fmnist(tmp_path, train=200, test=50)
    a = load_splits(root, val_size=40)
    b = load_splits(root, val_size=40)
    assert (len(a.train), len(a.val), len(a.test)) == (160, 40, 50)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.val.labels, b.val.labels)
    assert a.train.images.shape[1:] == (1, 28, 28) and a.train.images.dtype == torch.uint8
    train_rows = {bytes(img.numpy()) for img in a.train.images}
    assert not any(bytes(img.numpy()) in train_rows for img in a.val.images)


@pytest.mark.skipif(not Path(DEFAULT_DATA).exists(), reason="dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_splits() -> None:
    splits = load_splits()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (55000, 5000, 10000)
    assert splits.classes[0] == "T-shirt/top"


def test_missing_default_dataset_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("supernet.data.DEFAULT_DATA", str(tmp_path / "absent"))
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        load_splits(str(tmp_path / "absent"))


def test_unknown_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=f"no dataset in {tmp_path}"):
        load_splits(tmp_path)


def test_truncated_idx_file_is_reported(tmp_path: Path) -> None:
    root = make_fake_fmnist(tmp_path, train=50, test=10)
    path = root / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:-100]))
    with pytest.raises(UserError, match="truncated"):
        load_splits(root, val_size=5)


def test_corrupt_gzip_is_reported(tmp_path: Path) -> None:
    root = make_fake_fmnist(tmp_path, train=50, test=10)
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz is unreadable or corrupt"):
        load_splits(root, val_size=5)


def test_image_folder_dataset(tmp_path: Path) -> None:
    for split, count in (("train", 6), ("test", 2)):
        for name, shade in (("cat", 30), ("dog", 220)):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (40, 32), (shade, shade, shade)).save(folder / f"{i}.png")
    splits = load_splits(tmp_path, val_size=2)
    assert splits.classes == ("cat", "dog")
    assert splits.test.images.shape == (4, 1, 28, 28)
    assert sorted(splits.test.labels.tolist()) == [0, 0, 1, 1]
    assert splits.test.images[splits.test.labels == 1].float().mean() > 200


def test_batches_resume_mid_epoch_identically(tmp_path: Path) -> None:
    splits = load_splits(make_fake_fmnist(tmp_path, train=100, test=10), val_size=10)
    order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(1))
    full = list(batches(splits.train, 16, order=order, flip_seed=3))
    resumed = list(batches(splits.train, 16, order=order, start=2, flip_seed=3))
    assert len(resumed) == len(full) - 2
    for (x1, y1), (x2, y2) in zip(full[2:], resumed):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert 0.0 <= full[0][0].min() and full[0][0].max() <= 1.0
