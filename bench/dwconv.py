"""Elastic depthwise convolution: C++ kernel vs torch on the sliced weight, forward and forward+backward.

    python bench/dwconv.py

Ratios > 1 mean the kernel is faster than the baseline (torch NCHW, and torch channels-last).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from supernet.kernels import elastic_dwconv, kernel_backend  # noqa: E402

SHAPES = [(1, 96, 14, 14), (64, 96, 14, 14), (1, 96, 56, 56), (32, 96, 56, 56)]


def median_ms(fn, backward: bool, repeats: int) -> float:
    """Median of ``repeats`` timed calls after 2 warm-ups (grad enabled, unlike search.latency.time_call)."""
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        out = fn()
        if backward:
            out.sum().backward()
        if i >= 2:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, kernels: {kernel_backend()}")
    print(f"{'shape':>18s} {'k':>2s} {'pass':>8s} {'kernel ms':>10s} {'nchw ms':>9s} {'cl ms':>8s} "
          f"{'vs nchw':>8s} {'vs cl':>7s}")
    for shape in SHAPES:
        repeats = 5 if shape[0] * shape[2] > 1000 else 20
        for k in (3, 5, 7):
            weight = torch.randn(shape[1] + 48, 1, 7, 7, requires_grad=True)
            x = torch.randn(*shape, requires_grad=True)
            xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
            s = (7 - k) // 2

            def torch_conv(inp):
                return F.conv2d(inp, weight[: shape[1], :, s:s + k, s:s + k], None, 1, k // 2, 1, shape[1])

            for backward in (False, True):
                ours = median_ms(lambda: elastic_dwconv(x, weight, k, 1), backward, repeats)
                nchw = median_ms(lambda: torch_conv(x), backward, repeats)
                cl = median_ms(lambda: torch_conv(xc), backward, repeats)
                print(f"{str(shape):>18s} {k:2d} {'fwd+bwd' if backward else 'fwd':>8s} {ours:10.2f} {nchw:9.2f} "
                      f"{cl:8.2f} {nchw / ours:8.2f} {cl / ours:7.2f}")


if __name__ == "__main__":
    main()
