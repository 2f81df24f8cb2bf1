"""Elastic layers: standard torch layers whose forward computes on a slice of the largest weight.

Each class subclasses the torch layer it generalises, so ``state_dict`` keys stay the standard ones and a
supernet checkpoint reads like any model's. The active size is an argument of ``forward`` (or is read from
the input's channel count), never a flag set on the module. Nothing is masked: a smaller kernel is the
centre of the largest one, fewer channels are the leading ones. The one exception is the relaxed forward of
differentiable search (:func:`step_mask`, :meth:`ElasticSqueezeExcite.mixed`), where a weighted mix of
widths can only be a mask.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from supernet.kernels import elastic_batch_norm, elastic_dwconv, elastic_pointwise


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channel counts as MobileNet does: to a multiple of ``divisor``, never below 90% of ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def centre_kernel(weight: torch.Tensor, kernel: int) -> torch.Tensor:
    """The central ``kernel x kernel`` window of a square conv weight (a view, no copy)."""
    full = weight.shape[-1]
    start = (full - kernel) // 2
    return weight[..., start:start + kernel, start:start + kernel]


def step_mask(size: int, widths: Sequence[int], weights: torch.Tensor) -> torch.Tensor:
    """``mask[c] = sum_i weights[i] * 1[c < widths[i]]`` for ``c < size``: a weighted mix of "the leading
    ``widths[i]`` channels", the elastic width of differentiable search (one-hot ``weights``: exactly 0/1)."""
    steps = torch.arange(size, device=weights.device) < torch.tensor(list(widths), device=weights.device)[:, None]
    return weights @ steps.to(weights.dtype)


class ElasticPointwiseConv2d(nn.Conv2d):
    """1x1 convolution over the leading input channels of ``x`` producing ``out_channels`` channels.

    Runs :func:`supernet.kernels.elastic_pointwise` (one GEMM on the weight slice for channels-last input).
    """

    def __init__(self, max_in: int, max_out: int, bias: bool = False):
        super().__init__(max_in, max_out, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:
        out = self.out_channels if out_channels is None else out_channels
        return elastic_pointwise(x, self.weight, self.bias, out)


class ElasticDepthwiseConv2d(nn.Conv2d):
    """Depthwise convolution with elastic kernel size and channel count, "same" padding.

    Runs :func:`supernet.kernels.elastic_dwconv`: the C++ kernel, which reads the centre window and leading
    channels of the largest weight in place, where the extension is built; its slicing reference elsewhere.
    """

    def __init__(self, max_channels: int, max_kernel: int, stride: int = 1):
        super().__init__(max_channels, max_channels, max_kernel, stride=stride, padding=max_kernel // 2,
                         groups=max_channels, bias=False)

    def forward(self, x: torch.Tensor, kernel: int | None = None) -> torch.Tensor:
        k = self.kernel_size[0] if kernel is None else kernel
        return elastic_dwconv(x, self.weight, k, self.stride[0])


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """Batch norm over the leading channels of ``x``; running statistics are updated in place on the slice."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        factor = 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return elastic_batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var, self.training,
                                  factor, self.eps)


class ElasticSqueezeExcite(nn.Module):
    """MobileNetV3 squeeze-and-excite whose reduced width follows the active channel count."""

    def __init__(self, max_channels: int, reduction: int = 4):
        super().__init__()
        self.reduction = reduction
        self.reduce = ElasticPointwiseConv2d(max_channels, make_divisible(max_channels / reduction), bias=True)
        self.expand = ElasticPointwiseConv2d(make_divisible(max_channels / reduction), max_channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        scale = x.mean((2, 3), keepdim=True)
        scale = F.relu(self.reduce(scale, make_divisible(c / self.reduction)))
        scale = F.hardsigmoid(self.expand(scale, c))
        return x * scale

    def mixed(self, x: torch.Tensor, widths: Sequence[int], weights: torch.Tensor) -> torch.Tensor:
        """The relaxed forward on all channels of ``x``, which are already masked to a weighted mix of the
        leading ``widths[i]`` channels (by ``weights``): the reduced channels get the matching mix of their
        elastic widths, so one-hot ``weights`` give exactly ``forward`` at that width on the leading channels
        and zeros beyond (the masked input channels add nothing to the channel mean but their zeros)."""
        scale = x.mean((2, 3), keepdim=True)
        mid = step_mask(self.reduce.out_channels, [make_divisible(w / self.reduction) for w in widths], weights)
        scale = F.relu(self.reduce(scale)) * mid.view(1, -1, 1, 1)
        return x * F.hardsigmoid(self.expand(scale))


def activation(name: str) -> nn.Module:
    """The activation module for a stage's ``activation`` name."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"unknown activation {name!r}")
