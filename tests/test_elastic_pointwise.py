"""Elastic 1x1 convolution: the C++ composite (one GEMM on channels-last input) against its reference."""
import pytest
import torch

from supernet.kernels import elastic_pointwise, elastic_pointwise_reference, kernel_backend
from tests.layouts import random_input

BUILT = kernel_backend() == "cpp"


def sample(n: int, c: int, h: int, w: int, imax: int, omax: int, out: int, bias: bool,
           layout: str = "contiguous", dtype: torch.dtype = torch.float64, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = random_input(n, c, h, w, g, dtype, layout)
    b = torch.randn(omax, generator=g, dtype=dtype) if bias else None
    return x, torch.randn(omax, imax, 1, 1, generator=g, dtype=dtype), b, out


SAMPLES = {
    "sliced-both": sample(2, 5, 3, 4, 7, 9, 6, False),
    "channels-last": sample(2, 5, 3, 4, 7, 9, 6, False, layout="channels_last"),
    "channels-last-bias": sample(2, 5, 3, 4, 7, 9, 6, True, layout="channels_last"),
    "full-size": sample(3, 7, 2, 2, 7, 9, 9, True, layout="channels_last"),
    "squeeze-excite-1x1": sample(4, 6, 1, 1, 8, 4, 2, True),
    "one-channel": sample(2, 1, 3, 3, 4, 3, 1, False, layout="channels_last"),
    "non-contiguous": sample(2, 3, 3, 3, 4, 5, 4, True, layout="strided"),
    "empty-batch": sample(0, 3, 3, 3, 4, 5, 4, True, layout="channels_last"),
    "float32": sample(8, 24, 5, 5, 32, 96, 72, True, layout="channels_last", dtype=torch.float32),
}


def leaves(x, weight, bias):
    return (x.clone().requires_grad_(), weight.clone().requires_grad_(),
            None if bias is None else bias.clone().requires_grad_())


@pytest.mark.parametrize("name", SAMPLES)
def test_values_gradients_and_layout_match_reference(name: str) -> None:
    x, weight, bias, out = SAMPLES[name]
    tol = {"atol": 1e-4, "rtol": 1e-4} if x.dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-10}
    ours, ref = leaves(x, weight, bias), leaves(x, weight, bias)
    got, want = elastic_pointwise(*ours, out), elastic_pointwise_reference(*ref, out)
    torch.testing.assert_close(got, want, **tol)
    if x.is_contiguous(memory_format=torch.channels_last):
        assert got.is_contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(want)
    inputs = [t for t in ours if t is not None]
    for a, b in zip(torch.autograd.grad(got, inputs, grad),
                    torch.autograd.grad(want, [t for t in ref if t is not None], grad)):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("name", [n for n, s in SAMPLES.items() if s[0].dtype == torch.float64 and len(s[0])])
def test_gradcheck(name: str) -> None:
    x, weight, bias, out = SAMPLES[name]
    inputs = [t for t in leaves(x, weight, bias) if t is not None]
    assert torch.autograd.gradcheck(
        lambda *t: elastic_pointwise(t[0], t[1], t[2] if len(t) > 2 else None, out), tuple(inputs))


@pytest.mark.skipif(not BUILT, reason="C++ extension not built")
@pytest.mark.parametrize("name", SAMPLES)
def test_opcheck(name: str) -> None:
    x, weight, bias, out = SAMPLES[name]
    torch.library.opcheck(torch.ops.oneshot.elastic_pointwise, (*leaves(x, weight, bias), out))


@pytest.mark.parametrize("c, out", [(9, 4), (3, 0), (3, 12)])
def test_bad_arguments_raise_on_both_paths(c: int, out: int) -> None:
    x, weight = torch.randn(1, c, 2, 2), torch.randn(10, 8, 1, 1)
    with pytest.raises(ValueError):
        elastic_pointwise_reference(x, weight, None, out)
    with pytest.raises((RuntimeError, ValueError)):
        elastic_pointwise(x, weight, None, out)
