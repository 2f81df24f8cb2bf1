"""Why latency is timed against a reference probe: how far this machine's speed moves, and how little the ratio
of two networks timed back to back does.

For ``--seconds``, a fixed network (a random ``mbv3`` subnet, seed 0) and the reference probe of
:mod:`search.timing` (the smallest subnet) are timed alternately, one call each, batch 4, one thread, as a
latency table times them. The calls are cut into windows of ``--window`` seconds; for each window the median
wall-clock time of the network and the median of its ratio to the probe are printed. The summary compares the
spread of the window medians (largest over smallest): plain wall clock against the probe ratio.

    python bench/timing_stability.py                 # 60 s, 2 s windows
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.latency import make_probe  # noqa: E402
from search.timing import clock, prepare, threads  # noqa: E402
from supernet.model import Subnet  # noqa: E402
from supernet.space import get_space  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    space = get_space("mbv3")
    arch = space.sample(random.Random(0))
    torch.manual_seed(0)
    shape = (args.batch_size, space.config.in_channels, space.config.input_size, space.config.input_size)
    device = torch.device("cpu")
    network = prepare(Subnet(space.config, arch), shape, device)
    probe = make_probe(space.config, args.batch_size, device, "eager")
    timed = clock(device)
    windows: list[tuple[list[float], list[float]]] = []
    with threads(1), torch.no_grad():
        for _ in range(20):  # warm-up
            network(), probe()
        start = time.perf_counter()
        while (now := time.perf_counter() - start) < args.seconds:
            if len(windows) <= now // args.window:
                windows.append(([], []))
            t, p = timed(network), timed(probe)
            windows[-1][0].append(t)
            windows[-1][1].append(t / p)
    windows = [w for w in windows if len(w[0]) >= 5]
    print(f"network {space.to_string(arch)}, probe {space.to_string(space.smallest())}, batch {args.batch_size}, "
          f"1 thread, {args.seconds:g} s in {len(windows)} windows of {args.window:g} s")
    print(f"{'window':>6} {'calls':>6} {'wall-clock ms':>14} {'ratio to probe':>15}")
    walls, ratios = [], []
    for number, (times, ratio) in enumerate(windows):
        walls.append(statistics.median(times))
        ratios.append(statistics.median(ratio))
        print(f"{number:>6} {len(times):>6} {walls[-1]:>14.2f} {ratios[-1]:>15.3f}")
    print(f"window medians, largest / smallest: wall clock {max(walls) / min(walls):.2f}x "
          f"({min(walls):.2f}-{max(walls):.2f} ms); ratio to probe {max(ratios) / min(ratios):.3f}x "
          f"({min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
