"""C++ kernels and their pure-PyTorch references.

Importing this module never fails for lack of a compiler: when the extension ``supernet._C`` was not built,
every op runs its reference instead. :func:`kernel_backend` says which path runs; with ``ONESHOT_VERBOSE=1``
it is also said once on stderr at import.
"""
from __future__ import annotations

import os
import sys

import torch

try:
    import supernet._C  # noqa: F401  (registers torch.ops.oneshot.*)

    _BACKEND = "cpp"
except ImportError:
    _BACKEND = "reference"

if os.environ.get("ONESHOT_VERBOSE") == "1":
    print(f"oneshot-nas kernels: {_BACKEND}", file=sys.stderr)


def kernel_backend() -> str:
    """``"cpp"`` when the compiled extension is in use, ``"reference"`` otherwise."""
    return _BACKEND


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
    slots = torch.arange(table.shape[0]).expand_as(indices)
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
