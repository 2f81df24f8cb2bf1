"""Residual dropout: ``oneshot::dropout_add`` against torch's ``x + F.dropout(y)`` and the pure-PyTorch reference.

    python bench/dropout_add.py

Shapes of the elastic transformer's residual branches (``[batch, words, width]``), forward alone and forward
plus backward, p = 0.1 (``tfm-sst2``'s dropout). Ratio = torch / kernel (how many times faster the kernel is);
medians of alternate repeats, as ``bench/supernet_vs_static.py`` times. The reference computes the kernel's very
mask with torch integer ops; torch's dropout draws another (the same distribution).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.supernet_vs_static import paired_ms  # noqa: E402
from supernet.kernels import dropout_add, dropout_add_reference, kernel_backend  # noqa: E402

SHAPES = ((1, 64, 96), (64, 64, 64), (64, 64, 96), (64, 64, 128), (256, 64, 128))
P = 0.1


def timed(x: torch.Tensor, y: torch.Tensor, backward: bool) -> tuple[float, ...]:
    fns = {"kernel": lambda a, b: dropout_add(a, b, P, True), "torch": lambda a, b: a + F.dropout(b, P, True),
           "reference": lambda a, b: dropout_add_reference(a, b, P, 12345)}
    if backward:
        leaves = (x.clone().requires_grad_(), y.clone().requires_grad_())
        grad = torch.ones_like(x)
        calls = tuple((lambda f=f: f(*leaves).backward(grad)) for f in fns.values())
    else:
        calls = tuple((lambda f=f: f(x, y)) for f in fns.values())
    return paired_ms(calls, 3, 30)


def main() -> None:
    if kernel_backend() != "cpp":
        sys.exit("bench/dropout_add.py: the C++ extension is not built (pip install --no-build-isolation -e .)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, p = {P}")
    print(f"{'shape':16s} {'pass':8s} {'kernel ms':>10s} {'torch ms':>9s} {'reference ms':>13s} {'torch/kernel':>13s}")
    ratios = []
    for shape in SHAPES:
        x, y = torch.randn(shape), torch.randn(shape)
        for backward in (False, True):
            kernel, plain, reference = timed(x, y, backward)
            ratios.append(plain / kernel)
            print(f"{str(list(shape)):16s} {'fwd+bwd' if backward else 'fwd':8s} {kernel:10.3f} {plain:9.3f} "
                  f"{reference:13.3f} {plain / kernel:12.1f}x")
    print(f"kernel vs torch: {min(ratios):.1f}x to {max(ratios):.1f}x faster")


if __name__ == "__main__":
    main()
