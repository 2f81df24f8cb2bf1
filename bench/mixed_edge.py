"""NAS-Bench-201 mixed edge: the fused C++ kernel vs the five candidate ops run one by one, forward and forward+backward.

    python bench/mixed_edge.py [--quick] [--threads 2]

Both sides are one :class:`supernet.nb201_model.MixedOp` in training mode (batch statistics, running statistics
moving), NCHW float32, softmax weights that require grad: ``MixedOp.mixed(x, w, fused=False)`` (the reference,
``sum(w_k * op_k(x))``) against ``MixedOp.mixed(x, w)`` (one ``oneshot::mixed_edge`` call). The two are timed
alternately, call by call, in the same run; the backward gradients x, weights and every parameter. Ratios are
reference time / kernel time (> 1: the kernel is faster), medians. Shapes: the three stages of ``nb201-cpu``
(C = 8/16/32 at 32/16/8) and ``nb201`` (C = 16/32/64 at 32/16/8), batch 64 and 256.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from supernet.kernels import _EDGE_KERNEL, kernel_backend  # noqa: E402
from supernet.nb201_model import MixedOp  # noqa: E402

STAGES = {"nb201-cpu": [(8, 32), (16, 16), (32, 8)], "nb201": [(16, 32), (32, 16), (64, 8)]}


def timed_pair(fns: tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]], backward: bool,
               repeats: int) -> tuple[float, float]:
    """Median ms of each of two callables, called alternately ``repeats`` times after 2 warm-ups each."""
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(repeats + 2):
        for fn, acc in zip(fns, times):
            start = time.perf_counter()
            out = fn()
            if backward:
                out.backward(torch.ones_like(out))
            if i >= 2:
                acc.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[0]), statistics.median(times[1])


def rows(batches: tuple[int, ...], repeats: int) -> list[dict]:
    out = []
    for space, stages in STAGES.items():
        for c, size in stages:
            for batch in batches:
                torch.manual_seed(0)
                edge = MixedOp(c).train()
                x = torch.randn(batch, c, size, size, requires_grad=True)
                w = torch.softmax(torch.randn(5), 0).requires_grad_()
                fns = (lambda: edge.mixed(x, w, fused=False), lambda: edge.mixed(x, w))
                n = max(3, repeats if batch * c * size * size < 2e6 else repeats // 3)
                for backward in (False, True):
                    ref, ours = timed_pair(fns, backward, n)
                    out.append(dict(space=space, shape=(batch, c, size, size), pass_="fwd+bwd" if backward else "fwd",
                                    ref=ref, ours=ours))
                    print(f"{space:>10s} {str((batch, c, size, size)):>18s} {out[-1]['pass_']:>8s} {ref:9.2f} "
                          f"{ours:9.2f} {ref / ours:6.2f}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 64 only, fewer repeats (a smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, kernels: {kernel_backend()}"
          f"{'' if _EDGE_KERNEL else ' (no mixed_edge kernel: both sides run the reference)'}")
    print(f"{'space':>10s} {'shape':>18s} {'pass':>8s} {'ref ms':>9s} {'ours ms':>9s} {'ratio':>6s}")
    result = rows((64,) if args.quick else (64, 256), 5 if args.quick else 15)
    for pass_ in ("fwd", "fwd+bwd"):
        ratios = [r["ref"] / r["ours"] for r in result if r["pass_"] == pass_]
        print(f"{pass_}: median ratio {statistics.median(ratios):.2f}, min {min(ratios):.2f}, max {max(ratios):.2f} "
              f"over {len(ratios)} shapes")


if __name__ == "__main__":
    main()
