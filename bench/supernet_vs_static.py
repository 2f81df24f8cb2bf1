"""Whole supernet at an active subnet vs the extracted static subnet (plain eager PyTorch), in one run.

    python bench/supernet_vs_static.py [--spaces mbv3 mbv3-imagenet]

For each space, a random and the largest subnet: the forward (eval, channels-last, no grad) and one training
step (forward, cross-entropy, backward, SGD step; channels-last) of the supernet with that subnet active,
against the same for the static subnet that ``Supernet.extract`` returns. Ratio = supernet / static (target
<= 1.0: the supernet no slower than the plain model). Medians over the repeats, the two models timed alternately; weights are fresh (speed does
not depend on them). The line the supernet prints says which path its elastic ops run.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from supernet.model import Supernet  # noqa: E402
from supernet.space import get_space  # noqa: E402

CL = torch.channels_last
SETTINGS = {  # space: (forward batches, train batch, forward repeats, train repeats)
    "mbv3": ((1, 64), 128, 40, 8),
    "mbv3-imagenet": ((1, 8), 16, 10, 7),
}


def paired_ms(fns: tuple, warmup: int, repeats: int) -> tuple[float, ...]:
    """Median time of each function, timed alternately so that drift on a shared machine hits all alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append((time.perf_counter() - start) * 1000)
    return tuple(statistics.median(bucket) for bucket in times)


def forward_ms(models: tuple, x: torch.Tensor, repeats: int) -> tuple[float, ...]:
    for model in models:
        model.eval()
    with torch.no_grad():
        return paired_ms(tuple((lambda m=m: m(x)) for m in models), 3, repeats)


def step_ms(models: tuple, x: torch.Tensor, y: torch.Tensor, repeats: int) -> tuple[float, ...]:
    steps = []
    for model in models:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step(model=model, optimizer=optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)  # parameters outside the active subnet get no grad, no update
            F.cross_entropy(model(x), y).backward()
            optimizer.step()

        steps.append(step)
    return paired_ms(tuple(steps), 2, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'space':14s} {'subnet':8s} {'measure':18s} {'supernet ms':>12s} {'static ms':>10s} {'ratio':>6s}")
    ratios = []
    for name in args.spaces:
        batches, train_batch, fwd_repeats, train_repeats = SETTINGS[name]
        space = get_space(name)
        config = space.config
        torch.manual_seed(0)
        supernet = Supernet(config).to(memory_format=CL)
        for label, arch in (("random", space.sample(random.Random(0))), ("largest", space.largest())):
            supernet.set_active(arch)
            static = supernet.extract(arch).to(memory_format=CL)
            shape = (config.in_channels, config.input_size, config.input_size)
            rows = []
            for batch in batches:
                x = torch.rand(batch, *shape).contiguous(memory_format=CL)
                rows.append((f"forward b{batch}", *forward_ms((supernet, static), x, fwd_repeats)))
            x = torch.rand(train_batch, *shape).contiguous(memory_format=CL)
            y = torch.randint(0, config.num_classes, (train_batch,))
            rows.append((f"train step b{train_batch}", *step_ms((supernet, static), x, y, train_repeats)))
            for measure, ours, base in rows:
                ratios.append(ours / base)
                print(f"{name:14s} {label:8s} {measure:18s} {ours:12.2f} {base:10.2f} {ours / base:6.2f}")
    print(f"median ratio {statistics.median(ratios):.2f}, max {max(ratios):.2f} over {len(ratios)} cases")


if __name__ == "__main__":
    main()
