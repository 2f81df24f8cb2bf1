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

from supernet.cpuload import AdaptiveThreads
from supernet.data import Splits
from supernet.evaluate import accuracy, recalibrate_bn
from supernet.io import read_json, write_json

DEFAULT_CALIBRATION = 1000


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
