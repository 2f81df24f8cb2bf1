"""Whole supernet at an active subnet vs the extracted static subnet (plain eager PyTorch), in one run.

    python bench/supernet_vs_static.py [--spaces mbv3 mbv3-imagenet tfm-sst2] [--profile] [--dropout P]

For each space, a random and the largest subnet: the forward (eval, channels-last, no grad) and one training
step (forward, cross-entropy, backward, SGD step; channels-last) of the supernet with that subnet active,
against the same for the static subnet that ``Supernet.extract`` returns. Ratio = supernet / static (target
<= 1.0: the supernet no slower than the plain model). Medians over the repeats, the two models timed alternately; weights are fresh (speed does
not depend on them). The line the supernet prints says which path its elastic ops run.

``tfm-sst2`` (the elastic transformer) runs on sentences of the full 64 words, so that the supernet's dropping of
unused padding gives it nothing the static subnet lacks. ``--profile`` adds, per space and subnet, where each
model's forward spends its time: the torch profiler's self CPU time per operator, the operators of either model
that take the most. ``--dropout`` sets the transformer's dropout rate (0 leaves out what the supernet's dropout
kernel gains, so that the training step shows what weight slicing alone costs).
"""
from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from supernet.family import build_supernet, get_space, input_shape, token_input  # noqa: E402

CL = torch.channels_last
SETTINGS = {  # space: (forward batches, train batch, forward repeats, train repeats)
    "mbv3": ((1, 64), 128, 40, 8),
    "mbv3-imagenet": ((1, 8), 16, 10, 7),
    "tfm-sst2": ((1, 64), 64, 40, 10),
}
PROFILE_ROWS = 8


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


def inputs(config: object, batch: int) -> torch.Tensor:
    """A batch of the space's inputs: images, or sentences of random words filling every position."""
    text = token_input(config)
    if text is not None:
        return torch.randint(2, text.vocab_size, (batch, *input_shape(config))).float()
    return torch.rand(batch, *input_shape(config)).contiguous(memory_format=CL)


def profile(models: tuple, x: torch.Tensor, repeats: int = 20) -> None:
    """Print the self CPU time per call of the operators that take the most in either model's forward."""
    tables = []
    for model in models:
        model.eval()
        with torch.no_grad():
            for _ in range(3):
                model(x)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                for _ in range(repeats):
                    model(x)
        tables.append({e.key: e.self_cpu_time_total / repeats / 1000 for e in prof.key_averages()})
    ops = sorted(set(tables[0]) | set(tables[1]), key=lambda k: -max(t.get(k, 0.0) for t in tables))[:PROFILE_ROWS]
    for op in ops:
        print(f"    {op:32s} supernet {tables[0].get(op, 0.0):7.3f} ms   static {tables[1].get(op, 0.0):7.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--profile", action="store_true", help="also print where each forward spends its time")
    parser.add_argument("--dropout", type=float, default=None,
                        help="the transformer's dropout rate (default: the space's own, 0.1 for tfm-sst2)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'space':14s} {'subnet':8s} {'measure':18s} {'supernet ms':>12s} {'static ms':>10s} {'ratio':>6s}")
    ratios = []
    for name in args.spaces:
        batches, train_batch, fwd_repeats, train_repeats = SETTINGS[name]
        space = get_space(name)
        config = space.config
        if args.dropout is not None and hasattr(config, "dropout"):
            config = dataclasses.replace(config, dropout=args.dropout)
        torch.manual_seed(0)
        supernet = build_supernet(config).to(memory_format=CL)
        for label, arch in (("random", space.sample(random.Random(0))), ("largest", space.largest())):
            supernet.set_active(arch)
            static = supernet.extract(arch).to(memory_format=CL)
            rows = []
            for batch in batches:
                x = inputs(config, batch)
                rows.append((f"forward b{batch}", *forward_ms((supernet, static), x, fwd_repeats)))
            if args.profile:
                print(f"{name} {label} {space.to_string(arch)}: forward b{batches[-1]}, self CPU time per call")
                profile((supernet, static), x)
            x = inputs(config, train_batch)
            y = torch.randint(0, config.num_classes, (train_batch,))
            rows.append((f"train step b{train_batch}", *step_ms((supernet, static), x, y, train_repeats)))
            for measure, ours, base in rows:
                ratios.append(ours / base)
                print(f"{name:14s} {label:8s} {measure:18s} {ours:12.2f} {base:10.2f} {ours / base:6.2f}")
    print(f"median ratio {statistics.median(ratios):.2f}, max {max(ratios):.2f} over {len(ratios)} cases")


if __name__ == "__main__":
    main()
