"""The supernet shipped in the package: small, traceable to its command, and as accurate as promised."""
from pathlib import Path

import pytest
import torch

from supernet.checkpoint import PRETRAINED, load_supernet
from supernet.data import DEFAULT_DATA, load_splits
from supernet.evaluate import subnet_accuracy


def test_shipped_checkpoint_is_small_and_records_its_command() -> None:
    assert PRETRAINED.is_file(), "supernet/pretrained/mbv3-fmnist.pt is missing"
    assert PRETRAINED.stat().st_size <= 20 * 2 ** 20
    supernet, meta = load_supernet(PRETRAINED, space="mbv3")
    assert meta["command"][:3] == ["python", "-m", "supernet.train"]
    assert meta["progress"]["step"] == meta["progress"]["total_steps"]
    assert "optimizer" not in meta
    assert meta["metrics"]["largest"]["test_top1"] >= 0.90
    assert meta["metrics"]["smallest"]["test_top1"] >= 0.85


@pytest.mark.skipif(not Path(DEFAULT_DATA).exists(), reason="dataset-fashion-mnist is not installed")
@pytest.mark.slow
def test_shipped_supernet_accuracy_on_the_test_split() -> None:
    supernet, meta = load_supernet(PRETRAINED)
    splits = load_splits(val_size=meta["train_config"]["val_size"])
    calibration = splits.train.subset(torch.arange(meta["train_config"]["calib_size"]))
    space = supernet.space
    largest = subnet_accuracy(supernet, space.largest(), calibration, splits.test)
    smallest = subnet_accuracy(supernet, space.smallest(), calibration, splits.test)
    assert largest >= 0.90, largest
    assert smallest >= 0.85, smallest
    assert largest == pytest.approx(meta["metrics"]["largest"]["test_top1"], abs=1e-3)
