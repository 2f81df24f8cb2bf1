"""Elastic depthwise convolution and the fused mixed op: C++ kernels vs torch, forward and forward+backward.

    python bench/dwconv.py [--quick]

Ratios are torch time / kernel time (> 1: the kernel is faster), medians, in one run. Each layout is compared
with torch in the same layout: our NCHW kernel against ``F.conv2d(groups=C)`` on the sliced weight in NCHW,
our channels-last kernel against torch channels-last (oneDNN). Shapes: the default space's depthwise layers
(largest expand) at batch 4 and 128, and 1x96x56x56 and 32x96x56x56, with k = 3, 5, 7.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from supernet.kernels import elastic_dwconv, kernel_backend, mixed_dwconv  # noqa: E402

IMAGENET_SCALE = [(1, 96, 56, 56), (32, 96, 56, 56)]
MBV3 = [(96, 14, 1), (96, 14, 2), (144, 7, 1), (144, 7, 2), (240, 4, 1), (384, 4, 1)]  # channels, size, stride


def median_ms(fn, backward: bool, repeats: int) -> float:
    """Median of ``repeats`` timed calls after 2 warm-ups."""
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        out = fn()
        if backward:
            out.backward(torch.ones_like(out))
        if i >= 2:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def repeats_for(shape: tuple[int, ...]) -> int:
    work = shape[0] * shape[1] * shape[2] * shape[3]
    return 5 if work > 5e6 else 15 if work > 5e5 else 40


def dwconv_rows(shapes: list[tuple[tuple[int, ...], int]], kernels: tuple[int, ...]) -> list[dict]:
    rows = []
    for shape, stride in shapes:
        for k in kernels:
            weight = torch.randn(shape[1] + 48, 1, 7, 7, requires_grad=True)
            s = (7 - k) // 2
            for layout in ("nchw", "channels-last"):
                x = torch.randn(*shape)
                if layout == "channels-last":
                    x = x.contiguous(memory_format=torch.channels_last)
                x.requires_grad_()

                def torch_conv():
                    return F.conv2d(x, weight[: shape[1], :, s:s + k, s:s + k], None, stride, k // 2, 1, shape[1])

                for backward in (False, True):
                    ours = median_ms(lambda: elastic_dwconv(x, weight, k, stride), backward, repeats_for(shape))
                    base = median_ms(torch_conv, backward, repeats_for(shape))
                    rows.append(dict(shape=shape, stride=stride, k=k, layout=layout,
                                     pass_="fwd+bwd" if backward else "fwd", ours=ours, torch=base))
    return rows


def mixed_rows(shapes: list[tuple[int, ...]]) -> list[dict]:
    """Fused mixed op of K = 3 candidates (3x3, 5x5, 7x7) vs three torch convolutions and their weighted sum."""
    rows = []
    for shape in shapes:
        weights = [torch.randn(shape[1], 1, k, k, requires_grad=True) for k in (3, 5, 7)]
        alpha = torch.softmax(torch.randn(3), 0).requires_grad_()
        for layout in ("nchw", "channels-last"):
            x = torch.randn(*shape)
            if layout == "channels-last":
                x = x.contiguous(memory_format=torch.channels_last)
            x.requires_grad_()

            def separate():
                return sum(a * F.conv2d(x, w, None, 1, w.shape[-1] // 2, 1, shape[1]) for a, w in zip(alpha, weights))

            for backward in (False, True):
                ours = median_ms(lambda: mixed_dwconv(x, weights, alpha, 1), backward, repeats_for(shape))
                base = median_ms(separate, backward, repeats_for(shape))
                rows.append(dict(shape=shape, stride=1, k="3+5+7", layout=layout,
                                 pass_="fwd+bwd" if backward else "fwd", ours=ours, torch=base))
    return rows


def show(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'shape':>18s} {'s':>2s} {'k':>5s} {'layout':>13s} {'pass':>8s} {'ours ms':>9s} {'torch ms':>9s} "
          f"{'ratio':>6s}")
    for r in rows:
        print(f"{str(r['shape']):>18s} {r['stride']:2d} {str(r['k']):>5s} {r['layout']:>13s} {r['pass_']:>8s} "
              f"{r['ours']:9.3f} {r['torch']:9.3f} {r['torch'] / r['ours']:6.2f}")
    for layout in ("nchw", "channels-last"):
        ratios = [r["torch"] / r["ours"] for r in rows if r["layout"] == layout]
        print(f"  {layout}: median ratio {statistics.median(ratios):.2f}, min {min(ratios):.2f}, "
              f"max {max(ratios):.2f} over {len(ratios)} cases")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes (a smoke run)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, kernels: {kernel_backend()}")
    mbv3 = [((batch, c, size, size), stride) for batch in (4, 128) for c, size, stride in MBV3]
    big = [(shape, 1) for shape in IMAGENET_SCALE]
    if args.quick:
        mbv3, big = mbv3[:2], big[:1]
    show("elastic depthwise conv, mbv3 shapes (batch 4 and 128)", dwconv_rows(mbv3, (3, 7) if args.quick else (3, 5, 7)))
    show("elastic depthwise conv, ImageNet-scale shapes", dwconv_rows(big, (3, 5, 7)))
    show("fused mixed op (K = 3) vs three convolutions", mixed_rows([(128, 96, 14, 14), *IMAGENET_SCALE]))


if __name__ == "__main__":
    main()
