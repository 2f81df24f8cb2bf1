"""Export a subnet as a TorchScript file that runs without this project: ``python -m search.export``.

The subnet is extracted from the supernet with inherited weights, its batch norm recalibrated exactly as the
search scored it, scripted, checked against the eager module, and saved atomically with a ``metadata.json``
extra file (architecture, source checkpoint, input spec, validation accuracy). Load it anywhere with
``torch.jit.load(path)``; inputs are float images in [0, 1] of shape ``[N, C, H, W]``.
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from supernet.checkpoint import PRETRAINED, load_supernet
from supernet.data import DEFAULT_DATA, load_splits
from supernet.errors import UserError, run_cli
from supernet.evaluate import accuracy, recalibrate_bn
from supernet.io import atomic_write, read_json
from supernet.model import Subnet
from search.evaluate import DEFAULT_CALIBRATION


def export(subnet: Subnet, path: str | Path, metadata: dict[str, Any], example: torch.Tensor) -> Path:
    """Script ``subnet`` (eval mode), check it against eager on ``example``, write it atomically."""
    subnet = subnet.to(memory_format=torch.contiguous_format).eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script. is deprecated", category=DeprecationWarning)
        scripted = torch.jit.script(subnet)
    with torch.no_grad():
        if not torch.allclose(scripted(example), subnet(example), atol=1e-5):
            raise RuntimeError("the scripted subnet disagrees with the eager one")
    files = {"metadata.json": json.dumps(metadata, indent=2)}
    return atomic_write(path, lambda tmp: torch.jit.save(scripted, str(tmp), _extra_files=files))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``metadata.json`` that :func:`export` stored in a TorchScript file."""
    files = {"metadata.json": ""}
    torch.jit.load(str(path), _extra_files=files)
    return json.loads(files["metadata.json"])


def winner_of(results: Any, scenario: str | None, path: str, space: Any) -> dict[str, int]:
    """The winning architecture of ``scenario`` (default: the first) in a search's results."""
    try:
        winners = results["winners"]
        name = scenario or results["scenarios"][0]["name"]
    except (KeyError, TypeError, IndexError):
        raise UserError(f"{path} has no winners: is it a search.evolve or search.bo results.json?") from None
    if name not in winners:
        raise UserError(f"{path} has no scenario {name!r}; it has {', '.join(winners)}")
    return space.validate(winners[name]["arch"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m search.export", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="architecture: canonical string (k5e4-k3e6|...) or JSON object")
    which.add_argument("--results", help="results.json of a search: exports its winner")
    parser.add_argument("--scenario", default=None, help="with --results: whose winner (default: the first scenario)")
    parser.add_argument("--checkpoint", default=str(PRETRAINED), help="supernet checkpoint (default: shipped)")
    parser.add_argument("--data", default=DEFAULT_DATA, help="dataset for batch-norm recalibration")
    parser.add_argument("--calibration-size", type=int, default=DEFAULT_CALIBRATION,
                        help="training images to recalibrate batch norm on (0: keep the supernet's statistics)")
    parser.add_argument("--out", default="runs/export/subnet.pt", help="TorchScript file to write")
    args = parser.parse_args(argv)
    if args.calibration_size < 0:
        raise UserError(f"--calibration-size must not be negative, got {args.calibration_size}")

    supernet, meta = load_supernet(args.checkpoint)
    space = supernet.space
    if args.results:
        results = read_json(args.results, "search results")
        arch = winner_of(results, args.scenario, args.results, space)
    else:
        arch = space.parse(args.arch)
    splits = load_splits(args.data, channels=space.config.in_channels, size=space.config.input_size,
                         val_size=meta.get("train_config", {}).get("val_size", 5000))
    subnet = supernet.extract(arch).eval()
    if args.calibration_size:
        calibration = splits.train.subset(torch.arange(min(args.calibration_size, len(splits.train))))
        subnet = recalibrate_bn(subnet, calibration)
    val_top1 = accuracy(subnet, splits.val)
    config = space.config
    metadata = {"arch": space.to_string(arch), "arch_dict": arch, "space": config.name,
                "checkpoint": args.checkpoint, "val_top1": val_top1,
                "input": {"shape": ["N", config.in_channels, config.input_size, config.input_size],
                          "dtype": "float32", "range": [0.0, 1.0]}}
    example = torch.rand(2, config.in_channels, config.input_size, config.input_size)
    path = export(subnet, args.out, metadata, example)
    print(f"arch     {metadata['arch']}")
    print(f"val top1 {val_top1:.4f}")
    print(f"wrote {path} (TorchScript; load with torch.jit.load)")


if __name__ == "__main__":
    run_cli(main)
