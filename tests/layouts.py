"""The input layouts every kernel test covers, from one helper."""
import torch


def random_input(n: int, c: int, h: int, w: int, generator: torch.Generator, dtype: torch.dtype,
                 layout: str) -> torch.Tensor:
    """``[n, c, h, w]`` normal values, plain contiguous, ``"channels_last"`` or ``"strided"`` (every other column)."""
    if layout == "strided":
        return torch.randn(n, c, h, 2 * w, generator=generator, dtype=dtype)[..., ::2]
    x = torch.randn(n, c, h, w, generator=generator, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
