"""Elastic depthwise convolution on the GPU: the CUDA kernel vs torch's F.conv2d(groups=C) on the sliced weight.

    python bench/dwconv_cuda.py            # called by bench/gpu_check.sh

Forward and forward+backward, float32 and bfloat16, NCHW and channels-last input (torch gets the same layout).
Times are medians of CUDA-event-timed calls after warm-up; ratios > 1 mean our kernel is faster.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from supernet.kernels import _DWCONV_CUDA, elastic_dwconv, kernel_backend  # noqa: E402

SHAPES = [(1, 96, 56, 56), (32, 96, 56, 56), (64, 96, 14, 14)]
WARMUP, REPEATS = 10, 50


def median_ms(fn, x: torch.Tensor, weight: torch.Tensor, backward: bool) -> float:
    """Median over REPEATS of one call (and its backward), each between two CUDA events, after WARMUP calls."""
    times = []
    for i in range(WARMUP + REPEATS):
        x.grad, weight.grad = None, None
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        out = fn()
        if backward:
            out.backward(torch.ones_like(out))
        end.record()
        torch.cuda.synchronize()
        if i >= WARMUP:
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    assert torch.cuda.is_available(), "needs a CUDA device"
    assert _DWCONV_CUDA, "supernet._C was built without CUDA kernels: build with ONESHOT_FORCE_CUDA=1"
    torch.backends.cudnn.benchmark = True  # let torch pick its best algorithm: the strongest baseline
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, kernels: {kernel_backend()} + CUDA")
    print(f"{'shape':>18s} {'k':>2s} {'dtype':>9s} {'layout':>6s} {'pass':>8s} {'ours ms':>8s} {'torch ms':>9s} "
          f"{'ratio':>6s}")
    ratios = []
    for shape in SHAPES:
        c = shape[1]
        for k in (3, 5, 7):
            for dtype in (torch.float32, torch.bfloat16):
                for layout in ("nchw", "cl"):
                    fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
                    x = torch.randn(*shape, device="cuda", dtype=dtype).contiguous(memory_format=fmt)
                    x.requires_grad_()
                    weight = torch.randn(c + 48, 1, 7, 7, device="cuda", dtype=dtype, requires_grad=True)
                    s = (7 - k) // 2

                    def torch_conv():
                        return F.conv2d(x, weight[:c, :, s:s + k, s:s + k], None, 1, k // 2, 1, c)

                    def ours():
                        return elastic_dwconv(x, weight, k, 1)

                    for backward in (False, True):
                        mine = median_ms(ours, x, weight, backward)
                        theirs = median_ms(torch_conv, x, weight, backward)
                        ratios.append(theirs / mine)
                        print(f"{str(shape):>18s} {k:2d} {str(dtype)[6:]:>9s} {layout:>6s} "
                              f"{'fwd+bwd' if backward else 'fwd':>8s} {mine:8.3f} {theirs:9.3f} {theirs / mine:6.2f}",
                              flush=True)
    geo = statistics.geometric_mean(ratios)
    print(f"geometric mean of {len(ratios)} ratios (torch ms / ours ms, > 1 = ours faster): {geo:.2f}")


if __name__ == "__main__":
    main()
