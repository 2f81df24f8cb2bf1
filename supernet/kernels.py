"""C++ kernels and their pure-PyTorch references.

Importing this module never fails for lack of a compiler: when the extension ``supernet._C`` was not built,
every op runs its reference instead. :func:`kernel_backend` says which path runs; the supernet says it once
per process on stderr (:func:`announce`), and with ``ONESHOT_VERBOSE=1`` it is also said at import.
"""
from __future__ import annotations

import os
import sys

import torch

try:
    import supernet._C  # noqa: F401  (registers torch.ops.oneshot.*)

    _BACKEND, _WHY = "cpp", ""
except ImportError as err:
    _BACKEND, _WHY = "reference", str(err)

if os.environ.get("ONESHOT_VERBOSE") == "1":
    print(f"oneshot-nas kernels: {_BACKEND}", file=sys.stderr)


def kernel_backend() -> str:
    """``"cpp"`` when the compiled extension is in use, ``"reference"`` otherwise."""
    return _BACKEND


def backend_line() -> str:
    """One line saying which path the elastic ops run, and why when it is the fallback."""
    if _BACKEND == "cpp":
        return "oneshot-nas: elastic ops run the C++ kernels (supernet._C)"
    return (f"oneshot-nas: elastic ops run the pure-PyTorch reference ({_WHY or 'extension not built'}; "
            "reinstall with a compiler: pip install --no-build-isolation -e .)")


_announced = False


def announce() -> None:
    """Print :func:`backend_line` on stderr, the first time only."""
    global _announced
    if not _announced:
        _announced = True
        print(backend_line(), file=sys.stderr)


def _check_lut_args(indices: torch.Tensor, table: torch.Tensor) -> None:
    if indices.dim() != 2 or table.dim() != 3:
        raise ValueError(f"lut_sum: indices must be 2-D [N, S] and table 3-D [S, C, M], got "
                         f"{indices.dim()}-D and {table.dim()}-D")
    if indices.dtype != torch.int64 or table.dtype not in (torch.float32, torch.float64):
        raise ValueError("lut_sum: indices must be int64 and table float32 or float64")
    if indices.shape[1] != table.shape[0]:
        raise ValueError(f"lut_sum: indices have {indices.shape[1]} slots but the table has {table.shape[0]}")
    if indices.numel() and (indices.min() < -1 or indices.max() >= table.shape[1]):
        raise ValueError(f"lut_sum: an index is out of range [-1, {table.shape[1]})")


def lut_sum_reference(indices: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``out[n, m] = sum_s table[s, indices[n, s], m]``, skipping slots whose index is -1."""
    _check_lut_args(indices, table)
    slots = torch.arange(table.shape[0], device=indices.device).expand_as(indices)
    picked = table[slots, indices.clamp(min=0)]  # [N, S, M]
    return picked.masked_fill(indices.unsqueeze(-1) < 0, 0).sum(1)


if _BACKEND == "cpp":
    @torch.library.register_fake("oneshot::lut_sum")
    def _lut_sum_fake(indices: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return table.new_empty((indices.shape[0], table.shape[2]))


def lut_sum(indices: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Score encoded architectures against additive tables (see ``csrc/lut_sum.cpp``)."""
    if _BACKEND == "cpp" and indices.device.type == "cpu":
        return torch.ops.oneshot.lut_sum(indices, table)
    return lut_sum_reference(indices, table)


def _check_dwconv_args(x: torch.Tensor, weight: torch.Tensor, kernel: int, stride: int) -> None:
    if x.dim() != 4 or weight.dim() != 4 or weight.shape[1] != 1 or weight.shape[2] != weight.shape[3]:
        raise ValueError("elastic_dwconv: x must be [N, C, H, W] and weight [Cmax, 1, K, K]")
    if x.shape[1] > weight.shape[0]:
        raise ValueError(f"elastic_dwconv: x has {x.shape[1]} channels, weight only {weight.shape[0]}")
    if kernel <= 0 or kernel % 2 == 0 or kernel > weight.shape[-1] or stride < 1:
        raise ValueError(f"elastic_dwconv: kernel must be odd and at most {weight.shape[-1]}, stride positive")


def elastic_dwconv_reference(x: torch.Tensor, weight: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Depthwise conv on the centre ``kernel`` window and leading channels of the largest ``weight``."""
    _check_dwconv_args(x, weight, kernel, stride)
    start = (weight.shape[-1] - kernel) // 2
    sliced = weight[: x.shape[1], :, start:start + kernel, start:start + kernel]
    return torch.nn.functional.conv2d(x, sliced, None, stride, kernel // 2, 1, x.shape[1])


def _dwconv_format(x: torch.Tensor) -> torch.memory_format:
    """The kernels' layout for ``x``, and so their outputs': channels-last unless ``x`` is plain contiguous."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


if _BACKEND == "cpp":
    @torch.library.register_fake("oneshot::elastic_dwconv")
    def _elastic_dwconv_fake(x: torch.Tensor, weight: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
        pad = kernel // 2
        size = [(d + 2 * pad - kernel) // stride + 1 for d in x.shape[2:]]
        return x.new_empty((x.shape[0], x.shape[1], *size)).contiguous(memory_format=_dwconv_format(x))

    @torch.library.register_fake("oneshot::elastic_dwconv_backward")
    def _elastic_dwconv_backward_fake(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, kernel: int,
                                      stride: int) -> tuple[torch.Tensor, torch.Tensor]:
        grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_dwconv_format(x))
        return grad_x, torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)

    def _dwconv_setup(ctx, inputs, output) -> None:
        x, weight, kernel, stride = inputs
        ctx.save_for_backward(x, weight)
        ctx.kernel, ctx.stride = kernel, stride

    def _dwconv_backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x, grad_w = torch.ops.oneshot.elastic_dwconv_backward(grad, x, weight, ctx.kernel, ctx.stride)
        return grad_x, grad_w, None, None

    torch.library.register_autograd("oneshot::elastic_dwconv", _dwconv_backward, setup_context=_dwconv_setup)


# True when the extension was built with its CUDA kernels (csrc/cuda/); a CPU build registers only the CPU key.
_DWCONV_CUDA = _BACKEND == "cpp" and torch._C._dispatch_has_kernel_for_dispatch_key("oneshot::elastic_dwconv",
                                                                                    "CUDA")


def _use_dwconv_kernel(x: torch.Tensor) -> bool:
    """Whether a compiled elastic_dwconv kernel serves ``x``'s device and dtype."""
    if x.device.type == "cpu":
        return _BACKEND == "cpp" and x.dtype in (torch.float32, torch.float64)
    return _DWCONV_CUDA and x.device.type == "cuda" and x.dtype in (torch.float32, torch.float64, torch.float16,
                                                                   torch.bfloat16)


def elastic_dwconv(x: torch.Tensor, weight: torch.Tensor, kernel: int, stride: int = 1) -> torch.Tensor:
    """Elastic depthwise convolution (see ``csrc/elastic_dwconv.cpp``); the reference where not compiled."""
    if _use_dwconv_kernel(x):
        return torch.ops.oneshot.elastic_dwconv(x, weight, kernel, stride)
    return elastic_dwconv_reference(x, weight, kernel, stride)


def _check_mixed_args(x: torch.Tensor, weights: list[torch.Tensor], alpha: torch.Tensor) -> None:
    if x.dim() != 4 or not weights or alpha.dim() != 1 or alpha.shape[0] != len(weights):
        raise ValueError("mixed_dwconv: x must be [N, C, H, W], weights a non-empty list and alpha 1-D with one "
                         "entry per weight")
    for w in weights:
        if w.dim() != 4 or w.shape[1] != 1 or w.shape[2] != w.shape[3] or w.shape[2] % 2 == 0:
            raise ValueError(f"mixed_dwconv: every weight must be [Cmax, 1, k, k] with k odd, got {list(w.shape)}")
        if w.shape[0] < x.shape[1]:
            raise ValueError(f"mixed_dwconv: x has {x.shape[1]} channels, a weight only {w.shape[0]}")


def mixed_dwconv_reference(x: torch.Tensor, weights: list[torch.Tensor], alpha: torch.Tensor,
                           stride: int = 1) -> torch.Tensor:
    """``sum_k alpha[k] * dwconv(x, weights[k])``, one convolution per candidate ("same" padding)."""
    _check_mixed_args(x, weights, alpha)
    c = x.shape[1]
    return sum(a * torch.nn.functional.conv2d(x, w[:c], None, stride, w.shape[-1] // 2, 1, c)
               for a, w in zip(alpha, weights))


def mixed_dwconv(x: torch.Tensor, weights: list[torch.Tensor], alpha: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """Weighted sum of depthwise convolutions of different kernel sizes in one pass (``csrc/mixed_dwconv.cpp``).

    Differentiable in ``x``, every weight and ``alpha``; the reference (K convolutions) where not compiled.
    """
    if _use_dwconv_kernel(x):
        return torch.ops.oneshot.mixed_dwconv(x, list(weights), alpha, stride)
    return mixed_dwconv_reference(x, weights, alpha, stride)


def elastic_pointwise_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                out_channels: int) -> torch.Tensor:
    """1x1 convolution on the leading ``x.shape[1]`` input and ``out_channels`` output channels of ``weight``."""
    if x.dim() != 4 or weight.dim() != 4 or weight.shape[2:] != (1, 1):
        raise ValueError("elastic_pointwise: x must be [N, C, H, W] and weight [Omax, Imax, 1, 1]")
    if x.shape[1] > weight.shape[1] or not 1 <= out_channels <= weight.shape[0]:
        raise ValueError(f"elastic_pointwise: {x.shape[1]} -> {out_channels} channels do not fit a weight of "
                         f"{weight.shape[1]} -> {weight.shape[0]}")
    b = None if bias is None else bias[:out_channels]
    return torch.nn.functional.conv2d(x, weight[:out_channels, : x.shape[1]], b)


def elastic_pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      out_channels: int) -> torch.Tensor:
    """Elastic 1x1 convolution (``csrc/elastic_pointwise.cpp``: one GEMM on channels-last input, one dispatcher
    call); the reference where the extension is not built."""
    if _BACKEND == "cpp":
        return torch.ops.oneshot.elastic_pointwise(x, weight, bias, out_channels)
    return elastic_pointwise_reference(x, weight, bias, out_channels)


def elastic_batch_norm_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                                 running_mean: torch.Tensor, running_var: torch.Tensor, training: bool,
                                 momentum: float, eps: float) -> torch.Tensor:
    """Batch norm over the leading ``x.shape[1]`` channels; in training their running statistics move in place."""
    c = x.shape[1]
    if any(t.dim() != 1 or t.shape[0] < c for t in (weight, bias, running_mean, running_var)):
        raise ValueError(f"elastic_batch_norm: x has {c} channels, the layer's parameters and statistics fewer")
    return torch.nn.functional.batch_norm(x, running_mean[:c], running_var[:c], weight[:c], bias[:c], training,
                                          momentum, eps)


def elastic_batch_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                       running_var: torch.Tensor, training: bool, momentum: float, eps: float) -> torch.Tensor:
    """Elastic batch norm (``csrc/elastic_batch_norm.cpp``, one dispatcher call); the reference where not built."""
    if _BACKEND == "cpp":
        return torch.ops.oneshot.elastic_batch_norm(x, weight, bias, running_mean, running_var, training,
                                                    momentum, eps)
    return elastic_batch_norm_reference(x, weight, bias, running_mean, running_var, training, momentum, eps)


_EDGE_PER_CHANNEL = ("bn1_weight", "bn1_bias", "bn1_mean", "bn1_var", "bn3_weight", "bn3_bias", "bn3_mean",
                     "bn3_var")


def _check_edge_args(x: torch.Tensor, weights: torch.Tensor, conv1: torch.Tensor, conv3: torch.Tensor,
                     per_channel: tuple[torch.Tensor, ...]) -> None:
    if x.dim() != 4:
        raise ValueError(f"mixed_edge: x must be 4-D [N, C, H, W], got {x.dim()}-D")
    c = x.shape[1]
    if weights.shape != (5,):
        raise ValueError(f"mixed_edge: weights must be 1-D with one entry per op (5), got shape {list(weights.shape)}")
    for name, conv, k in (("conv1", conv1, 1), ("conv3", conv3, 3)):
        if conv.shape != (c, c, k, k):
            raise ValueError(f"mixed_edge: {name} must be [{c}, {c}, {k}, {k}] for x of {c} channels, got "
                             f"{list(conv.shape)}")
    for name, t in zip(_EDGE_PER_CHANNEL, per_channel):
        if t.shape != (c,):
            raise ValueError(f"mixed_edge: {name} must be 1-D of {c} channels, got shape {list(t.shape)}")


def mixed_edge_reference(x: torch.Tensor, weights: torch.Tensor, conv1: torch.Tensor, conv3: torch.Tensor,
                         bn1_weight: torch.Tensor, bn1_bias: torch.Tensor, bn1_mean: torch.Tensor,
                         bn1_var: torch.Tensor, bn3_weight: torch.Tensor, bn3_bias: torch.Tensor,
                         bn3_mean: torch.Tensor, bn3_var: torch.Tensor, training: bool, momentum: float,
                         eps: float) -> torch.Tensor:
    """One NAS-Bench-201 edge mixing its five ops by ``weights`` (OPS order), op by op:
    ``w0 * (x * 0) + w1 * x + w2 * BN1(conv1(relu x)) + w3 * BN3(conv3(relu x)) + w4 * avgpool3x3(x)``.

    Each batch norm uses batch statistics and moves its running ones in place (``momentum``, unbiased
    variance) when ``training``, the running ones otherwise, as ``F.batch_norm``.
    """
    per_channel = (bn1_weight, bn1_bias, bn1_mean, bn1_var, bn3_weight, bn3_bias, bn3_mean, bn3_var)
    _check_edge_args(x, weights, conv1, conv3, per_channel)
    F = torch.nn.functional
    r = torch.relu(x)
    terms = (x * 0, x,
             F.batch_norm(F.conv2d(r, conv1), bn1_mean, bn1_var, bn1_weight, bn1_bias, training, momentum, eps),
             F.batch_norm(F.conv2d(r, conv3, padding=1), bn3_mean, bn3_var, bn3_weight, bn3_bias, training,
                          momentum, eps),
             F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    return sum(w * t for w, t in zip(weights, terms))


# True when the extension has the mixed-edge kernel (an older build may lack it).
_EDGE_KERNEL = _BACKEND == "cpp" and hasattr(torch.ops.oneshot, "mixed_edge")

if _EDGE_KERNEL:
    @torch.library.register_fake("oneshot::mixed_edge")
    def _mixed_edge_fake(x, weights, conv1, conv3, bn1_weight, bn1_bias, bn1_mean, bn1_var, bn3_weight, bn3_bias,
                         bn3_mean, bn3_var, training, eps):
        planes = [torch.empty(x.shape, dtype=x.dtype, device=x.device) for _ in range(4)]
        return (*planes, x.new_empty((4, x.shape[1])))

    @torch.library.register_fake("oneshot::mixed_edge_backward")
    def _mixed_edge_backward_fake(grad, x, weights, conv1, conv3, bn1_weight, bn1_bias, bn3_weight, bn3_bias, relu,
                                  y1, y3, stats, training, eps):
        return (torch.empty(x.shape, dtype=x.dtype, device=x.device), weights.new_empty(5),
                conv1.new_empty(conv1.shape), conv3.new_empty(conv3.shape),
                *[bn1_weight.new_empty(bn1_weight.shape) for _ in range(4)])

    @torch.library.register_fake("oneshot::mixed_edge_update_stats")
    def _mixed_edge_update_stats_fake(mean1, var1, mean3, var3, stats, factor, count) -> None:
        return None

    def _edge_setup(ctx, inputs, output) -> None:
        x, weights, conv1, conv3, g1, b1, _, _, g3, b3, _, _, training, eps = inputs
        _, relu, y1, y3, stats = output
        ctx.save_for_backward(x, weights, conv1, conv3, g1, b1, g3, b3, relu, y1, y3, stats)
        ctx.training, ctx.eps = training, eps
        ctx.mark_non_differentiable(relu, y1, y3, stats)
        ctx.set_materialize_grads(False)  # no zero planes for the saved outputs' (unused) gradients

    def _edge_backward(ctx, grad: torch.Tensor | None, *unused: torch.Tensor | None):
        if grad is None:  # grads are not materialised: None stands for zeros
            return (None,) * 14
        gx, gw, gc1, gc3, gg1, gb1, gg3, gb3 = torch.ops.oneshot.mixed_edge_backward(grad, *ctx.saved_tensors,
                                                                                      ctx.training, ctx.eps)
        return gx, gw, gc1, gc3, gg1, gb1, None, None, gg3, gb3, None, None, None, None

    torch.library.register_autograd("oneshot::mixed_edge", _edge_backward, setup_context=_edge_setup)


def mixed_edge(x: torch.Tensor, weights: torch.Tensor, conv1: torch.Tensor, conv3: torch.Tensor,
               bn1_weight: torch.Tensor, bn1_bias: torch.Tensor, bn1_mean: torch.Tensor, bn1_var: torch.Tensor,
               bn3_weight: torch.Tensor, bn3_bias: torch.Tensor, bn3_mean: torch.Tensor, bn3_var: torch.Tensor,
               training: bool, momentum: float, eps: float) -> torch.Tensor:
    """The mixed edge of :func:`mixed_edge_reference` as one fused CPU kernel (``csrc/mixed_edge.cpp``), forward
    and backward; the running statistics move as the reference moves them. The reference where not compiled."""
    if _EDGE_KERNEL and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        out, _, _, _, stats = torch.ops.oneshot.mixed_edge(x, weights, conv1, conv3, bn1_weight, bn1_bias, bn1_mean,
                                                           bn1_var, bn3_weight, bn3_bias, bn3_mean, bn3_var,
                                                           training, eps)
        if training:
            count = x.shape[0] * x.shape[2] * x.shape[3]
            torch.ops.oneshot.mixed_edge_update_stats(bn1_mean, bn1_var, bn3_mean, bn3_var, stats, momentum, count)
        return out
    return mixed_edge_reference(x, weights, conv1, conv3, bn1_weight, bn1_bias, bn1_mean, bn1_var, bn3_weight,
                                bn3_bias, bn3_mean, bn3_var, training, momentum, eps)


def dropout_keep(numel: int, p: float, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The mask of ``csrc/dropout_add.cpp`` for ``numel`` elements: element ``i`` is kept when a 32-bit integer
    hash of ``i xor seed`` is at least ``round(p * 2**32)``. The hash is a bijection of ``[0, 2**32)``, so a
    fraction ``1 - p`` of all indices is kept; int64 arithmetic here, no product reaches ``2**63``."""
    if not 0.0 <= p <= 1.0 or numel >= 1 << 32:
        raise ValueError(f"dropout: p must be in [0, 1] (got {p}) and tensors under 2**32 elements (got {numel})")
    x = torch.arange(numel, dtype=torch.int64, device=device) ^ (seed & 0xFFFFFFFF)
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return ((x >> 16) ^ x) >= round(p * 2 ** 32)


def dropout_scale_reference(grad: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """``grad`` with :func:`dropout_keep`'s dropped elements zeroed and the kept ones scaled by ``1 / (1 - p)``."""
    keep = dropout_keep(grad.numel(), p, seed, grad.device).view(grad.shape)
    return grad * keep.to(grad.dtype) * (1.0 / (1.0 - p) if p < 1.0 else 0.0)


def dropout_add_reference(x: torch.Tensor, y: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """``x + dropout(y)`` with the mask of :func:`dropout_keep`: the oracle of ``oneshot::dropout_add``."""
    if x.shape != y.shape or x.dtype != y.dtype:
        raise ValueError(f"dropout_add: x and y must have the same shape and dtype, got {list(x.shape)} and "
                         f"{list(y.shape)}")
    return x + dropout_scale_reference(y, p, seed)


_DROPOUT_KERNEL = _BACKEND == "cpp" and hasattr(torch.ops.oneshot, "dropout_add")

if _DROPOUT_KERNEL:
    @torch.library.register_fake("oneshot::dropout_add")
    def _dropout_add_fake(x: torch.Tensor, y: torch.Tensor, p: float, seed: int) -> torch.Tensor:
        return torch.empty_like(y, memory_format=torch.contiguous_format)

    @torch.library.register_fake("oneshot::dropout_scale")
    def _dropout_scale_fake(grad: torch.Tensor, p: float, seed: int) -> torch.Tensor:
        return torch.empty_like(grad, memory_format=torch.contiguous_format)

    def _dropout_setup(ctx, inputs, output) -> None:
        ctx.p, ctx.seed = inputs[-2], inputs[-1]

    def _dropout_add_backward(ctx, grad: torch.Tensor):
        return grad, torch.ops.oneshot.dropout_scale(grad, ctx.p, ctx.seed), None, None

    def _dropout_scale_backward(ctx, grad: torch.Tensor):
        return torch.ops.oneshot.dropout_scale(grad, ctx.p, ctx.seed), None, None

    torch.library.register_autograd("oneshot::dropout_add", _dropout_add_backward, setup_context=_dropout_setup)
    torch.library.register_autograd("oneshot::dropout_scale", _dropout_scale_backward, setup_context=_dropout_setup)


def dropout_add(x: torch.Tensor, y: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``x + dropout(y, p)``, a residual with dropout on its branch: one pass of ``csrc/dropout_add.cpp`` on the
    CPU, whose backward recomputes the mask from a seed drawn from torch's generator (so ``torch.manual_seed``
    fixes the masks). Elsewhere, or unbuilt, torch's own dropout, which is the same distribution and faster
    than :func:`dropout_add_reference`'s integer hash in torch ops (that one is the kernel's test oracle)."""
    if not training or p == 0.0:
        return x + y
    if _DROPOUT_KERNEL and y.device.type == "cpu" and y.dtype in (torch.float32, torch.float64) \
            and x.shape == y.shape and x.dtype == y.dtype:
        seed = int(torch.randint(1 << 32, ()).item())
        return torch.ops.oneshot.dropout_add(x, y, p, seed)
    return x + torch.nn.functional.dropout(y, p, True)
