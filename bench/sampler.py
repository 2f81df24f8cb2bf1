"""Architectures sampled and scored per second: C++ ops vs the pure-Python path vs the vectorised reference.

    python bench/sampler.py            # mbv3, one thread; takes about a minute

Sample + score = draw N encoded architectures (uniformly over distinct networks, or uniformly in a latency
window) and compute their table latency, FLOPs and params. The pure-Python path is what a search loop does
one architecture at a time: ``Space.sample(random.Random)``, ``LatencyTable.predict`` and a per-unit dict
lookup of FLOPs and params; in a window it rejects until the predicted latency falls inside. Peak memory is
the VmHWM growth of a fresh process that samples and scores 10M architectures in one call each.

The latency table is synthetic (per unit: 0.5 ms + 1 ms per 1.9M multiply-adds, fitted to the 6.8-18.3 ms span of
a measured mbv3 table): measuring one takes minutes and the speed of these ops does not depend on the values.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.latency import LatencyTable  # noqa: E402
from supernet import sampler as sm  # noqa: E402
from supernet.kernels import kernel_backend  # noqa: E402
from supernet.family import unit_keys  # noqa: E402
from supernet.model import units  # noqa: E402
from supernet.space import get_space  # noqa: E402


def synthetic_table(space) -> LatencyTable:
    counts = sm._count_units(space.config)[0]
    entries = {key: {"median_ms": 0.5 + counts[key][0] / 1.9e6, "spread_ms": 0.0, "count": 1}
               for key, _, _ in units(space.config)}
    return LatencyTable({"space": space.config.to_dict(), "fingerprint": {"batch_size": 4}, "entries": entries})


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def python_path(space, table: LatencyTable, n: int, window: tuple[float, float] | None) -> tuple[float, float]:
    """Archs/s of the per-architecture Python path, and its acceptance rate in the window."""
    counts = sm._count_units(space.config)[0]
    rng = random.Random(0)
    start = time.perf_counter()
    kept = tried = 0
    while kept < n:
        arch = space.sample(rng)
        tried += 1
        latency = table.predict(arch)
        if window and not window[0] <= latency <= window[1]:
            continue
        keys = unit_keys(space, arch)
        flops, params = sum(counts[k][0] for k in keys), sum(counts[k][1] for k in keys)
        kept += 1
    return n / (time.perf_counter() - start), kept / tried


def memory_child(mode: str, n: int) -> None:
    """Run in a fresh process: sample and score ``n`` architectures, print VmHWM growth as JSON."""
    torch.set_num_threads(1)
    space = get_space("mbv3")
    table = synthetic_table(space)
    metrics = table.metric_table().join(sm.flops_params_table(space.config))
    window = window_for(table) if mode == "window" else None

    def hwm() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024
        return 0

    before = hwm()
    start = time.perf_counter()
    codes = sm.sample(space, n, seed=0, latency=metrics, window=window)
    scores = sm.score(space, codes, metrics)
    seconds = time.perf_counter() - start
    print(json.dumps({"peak_delta": hwm() - before, "codes": codes.numel() * codes.element_size(),
                      "scores": scores.numel() * scores.element_size(), "seconds": seconds}))


def window_for(table: LatencyTable) -> tuple[float, float]:
    """A 1 ms window in the middle of the space's range (about 6% of mbv3's networks)."""
    small, large = table.predict(table.space.smallest()), table.predict(table.space.largest())
    middle = (small + large) / 2
    return middle - 0.5, middle + 0.5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memory-child", choices=["uniform", "window"])
    parser.add_argument("--n", type=int, default=10_000_000)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.n)
        return
    torch.set_num_threads(1)
    space = get_space("mbv3")
    table = synthetic_table(space)
    metrics = table.metric_table().join(sm.flops_params_table(space.config))
    window = window_for(table)
    print(f"space mbv3 ({space.size():.3e} networks), kernels: {kernel_backend()}, 1 thread; synthetic latency "
          f"table: smallest {table.predict(space.smallest()):.2f} ms, largest {table.predict(space.largest()):.2f} ms")
    print(f"window [{window[0]:.2f}, {window[1]:.2f}] ms holds {sm.window_count(space, metrics, window):.3e} "
          f"networks at resolution {sm.DEFAULT_RESOLUTION_MS} ms")
    rows = []
    for mode, win in (("uniform", None), ("window", window)):
        n = 1_000_000
        sample_s = best_of(lambda: sm.sample(space, n, seed=1, latency=metrics, window=win))
        codes = sm.sample(space, n, seed=1, latency=metrics, window=win)
        score_s = best_of(lambda: sm.score(space, codes, metrics))
        both = n / best_of(lambda: sm.score(space, sm.sample(space, n, seed=1, latency=metrics, window=win),
                                            metrics))
        n_ref = 100_000
        ref = n_ref / best_of(lambda: sm.score_archs_reference(
            sm.sample(space, n_ref, seed=1, latency=metrics, window=win, backend="reference"),
            metrics.blocks, metrics.base, list(space.config.depths), len(space.config.expands)), 1)
        py, accept = python_path(space, table, 3000, win)
        rows.append((mode, n / sample_s, n / score_s, both, ref, py, accept))
    print("| mode | sample (archs/s) | score (archs/s) | sample+score C++ (archs/s) | vectorised reference | "
          "pure Python | C++ / Python | C++ / reference |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode, sample_rate, score_rate, both, ref, py, accept in rows:
        note = f" (rejection, {accept:.0%} accepted)" if mode == "window" else ""
        print(f"| {mode} | {sample_rate:,.0f} | {score_rate:,.0f} | {both:,.0f} | {ref:,.0f} | {py:,.0f}{note} | "
              f"{both / py:,.0f}x | {both / ref:,.1f}x |")
    for mode in ("uniform", "window"):
        out = subprocess.run([sys.executable, __file__, "--memory-child", mode, "--n", str(args.n)],
                             capture_output=True, text=True, check=True).stdout
        m = json.loads(out)
        print(f"{args.n / 1e6:.0f}M archs, {mode}: peak memory +{m['peak_delta'] / 2**20:.0f} MiB (codes "
              f"{m['codes'] / 2**20:.0f} MiB int8, scores {m['scores'] / 2**20:.0f} MiB float64), "
              f"{m['seconds']:.2f} s sample+score")


if __name__ == "__main__":
    main()
