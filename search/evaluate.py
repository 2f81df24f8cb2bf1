"""The supernet evaluator: architecture -> validation accuracy with inherited weights, cached.

Search algorithms only see a callable from an architecture to a dict of metrics; this is the one backed by a
trained supernet. Each architecture is extracted, its batch norm recalibrated on a fixed subset of training
images, and scored on the validation split (never the test split). Results are cached by canonical string,
in memory and, with ``cache_path``, in a JSON file that a resumed search reads back.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

from supernet.checkpoint import trained_classes
from supernet.cpuload import AdaptiveThreads
from supernet.data import Splits, load_splits
from supernet.evaluate import accuracy, recalibrate_bn
from supernet.family import data_format
from supernet.io import read_json, write_json

DEFAULT_CALIBRATION = 1000


def checkpoint_splits(data: str, meta: Mapping[str, Any], config: Any, checkpoint: str | os.PathLike) -> Splits:
    """The splits a checkpoint's subnets are scored on: ``data`` (see :func:`supernet.checkpoint.trained_data`)
    with the validation split as large as the checkpoint's training held out (5000 where it does not say),
    refused in one line if the dataset has another number of classes than the network was trained on.

    Every command that scores subnets with inherited or retrained weights loads its data here, so a subnet's
    validation accuracy means the same images in a search, a retraining, an ensemble and a predictor.
    """
    return load_splits(data, **data_format(config),
                       val_size=meta.get("train_config", {}).get("val_size", 5000), num_classes=config.num_classes,
                       trained=(trained_classes(meta, config), f"checkpoint {checkpoint}"))


class SupernetEvaluator:
    """Callable scoring architectures of ``supernet`` on ``splits.val``; ``calls`` counts real evaluations."""

    def __init__(self, supernet: Any, splits: Splits, *, calibration_size: int = DEFAULT_CALIBRATION,
                 cache_path: str | os.PathLike | None = None, threads: AdaptiveThreads | None = None):
        """``threads``: torch's thread count is fitted to the machine's load before evaluations (see
        :mod:`supernet.cpuload`); None leaves it as it is."""
        self.supernet, self.space, self.splits = supernet, supernet.space, splits
        self.threads = threads
        self.calibration = splits.train.subset(torch.arange(min(calibration_size, len(splits.train))))
        self.cache_path = Path(cache_path) if cache_path else None
        self.cache: dict[str, dict[str, Any]] = {}
        if self.cache_path and self.cache_path.exists():
            self.cache = read_json(self.cache_path, "evaluation cache")
        self.calls = 0

    def __call__(self, arch: Mapping[str, int]) -> dict[str, Any]:
        key = self.space.to_string(arch)
        if key not in self.cache:
            if self.threads:
                self.threads.update()
            # the network the string names (its canonical form): one evaluation per distinct function
            subnet = recalibrate_bn(self.supernet.extract(self.space.parse(key)), self.calibration)
            self.cache[key] = {"val_top1": accuracy(subnet, self.splits.val)}
            self.calls += 1
            if self.cache_path:
                write_json(self.cache_path, self.cache)
        return dict(self.cache[key])
