"""Wall time of one supernet training epoch on this machine, per space and sampling rule.

    python bench/train_cost.py                               # nb201-cpu and nb201, uniform and fair, 2 threads
    python bench/train_cost.py --spaces nb201-cpu --steps 10 # quicker

Times ``--steps`` training steps (after two warm-up steps) of ``supernet.train``'s own step functions on
random 32x32 batches of ``--batch-size`` (forward, backward, optimizer step; SGD with Nesterov momentum), and
scales the median step to one epoch of CIFAR-10's 45,000 training images (50,000 less the 5,000 validation
images ``supernet.train`` holds out). Data loading is left out: images come from the uint8 cache and crop and
flip cost about a millisecond a batch. Prints seconds per step and per epoch and, for ``fair``, the ratio to a
``uniform`` epoch (FairNAS trains as many paths per step as an edge has ops).
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from supernet import family  # noqa: E402
from supernet.train import TrainConfig, make_optimizer, path_step, sandwich_step  # noqa: E402

EPOCH_IMAGES = 45_000


def step_seconds(space_name: str, rule: str, batch_size: int, steps: int) -> float:
    """Median wall time of one training step of ``rule`` on ``space_name``'s supernet."""
    space = family.get_space(space_name)
    config = TrainConfig(space=space_name, sampling=rule, batch_size=batch_size, label_smoothing=0.0)
    torch.manual_seed(0)
    model = family.build_supernet(space.config).train()
    optimizer = make_optimizer(model, config)
    step = sandwich_step if rule == "sandwich" else path_step
    x = torch.rand(batch_size, *family.input_shape(space.config))
    y = torch.randint(0, space.config.num_classes, (batch_size,))
    times = []
    for number in range(steps + 2):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        step(model, x, y, config, random.Random(number))
        optimizer.step()
        if number >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python bench/train_cost.py", description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=["nb201-cpu", "nb201"])
    parser.add_argument("--rules", nargs="+", default=["uniform", "fair"], choices=["uniform", "fair", "sandwich"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    per_epoch = math.ceil(EPOCH_IMAGES / args.batch_size)
    print(f"{args.threads} threads, batch {args.batch_size}, {per_epoch} steps per epoch")
    for name in args.spaces:
        base = None
        for rule in args.rules:
            seconds = step_seconds(name, rule, args.batch_size, args.steps)
            epoch = seconds * per_epoch
            base = epoch if rule == "uniform" else base
            ratio = f"  ({epoch / base:.2f}x a uniform epoch)" if base and rule != "uniform" else ""
            print(f"{name:10s} {rule:8s} {seconds * 1000:8.1f} ms/step  {epoch / 60:7.1f} min/epoch{ratio}")


if __name__ == "__main__":
    main()
