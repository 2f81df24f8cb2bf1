"""Elastic depthwise convolution: the C++ kernel against its pure-PyTorch reference, from one sample list."""
import pytest
import torch

from supernet.kernels import elastic_dwconv, elastic_dwconv_reference, kernel_backend
from tests.layouts import random_input

BUILT = kernel_backend() == "cpp"


def sample(n: int, c: int, h: int, w: int, cmax: int, kmax: int, kernel: int, stride: int,
           dtype: torch.dtype = torch.float64, layout: str = "contiguous", seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = random_input(n, c, h, w, g, dtype, layout)
    return x, torch.randn(cmax, 1, kmax, kmax, generator=g, dtype=dtype), kernel, stride


SAMPLES = {
    "k3-s1": sample(2, 6, 8, 8, 12, 7, 3, 1),
    "k5-s2-odd": sample(2, 5, 9, 7, 8, 7, 5, 2),
    "k7-s1-full-width": sample(1, 4, 6, 6, 4, 7, 7, 1),
    "one-channel": sample(3, 1, 5, 5, 6, 7, 3, 2),
    "k7-on-4x4": sample(2, 3, 4, 4, 8, 7, 7, 1),
    "stride2-odd-sizes": sample(1, 3, 7, 5, 3, 5, 3, 2),
    "channels-last": sample(2, 4, 6, 6, 8, 7, 5, 1, layout="channels_last"),
    "non-contiguous": sample(2, 4, 6, 6, 8, 7, 3, 2, layout="strided"),
    "empty-batch": sample(0, 4, 6, 6, 8, 7, 3, 1),
    "float32": sample(2, 6, 8, 8, 12, 7, 5, 1, dtype=torch.float32),
    "batch-tiles": sample(9, 3, 5, 5, 4, 7, 5, 1, layout="channels_last"),
    "batch-tiles-f32-channel-blocks": sample(17, 40, 7, 6, 48, 7, 7, 1, dtype=torch.float32, layout="channels_last"),
    "wide-rows-f32": sample(2, 20, 5, 40, 24, 7, 3, 1, dtype=torch.float32, layout="channels_last"),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_values_and_gradients_match_reference(name: str) -> None:
    x, weight, kernel, stride = SAMPLES[name]
    # float32: sums of up to a few hundred products summed in another order than the reference's
    tol = {"atol": 1e-4, "rtol": 1e-4} if x.dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-10}
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    ws = [weight.clone().requires_grad_(), weight.clone().requires_grad_()]
    out = elastic_dwconv(xs[0], ws[0], kernel, stride)
    ref = elastic_dwconv_reference(xs[1], ws[1], kernel, stride)
    torch.testing.assert_close(out, ref, **tol)
    grad = torch.randn_like(ref)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(xs[0].grad, xs[1].grad, **tol)
    torch.testing.assert_close(ws[0].grad, ws[1].grad, **tol)


@pytest.mark.parametrize("name", [n for n, s in SAMPLES.items() if s[0].dtype == torch.float64 and len(s[0])])
def test_gradcheck(name: str) -> None:
    x, weight, kernel, stride = SAMPLES[name]
    assert torch.autograd.gradcheck(lambda a, b: elastic_dwconv(a, b, kernel, stride),
                                    (x.clone().requires_grad_(), weight.clone().requires_grad_()))


@pytest.mark.skipif(not BUILT, reason="C++ extension not built")
@pytest.mark.parametrize("name", SAMPLES)
def test_opcheck(name: str) -> None:
    x, weight, kernel, stride = SAMPLES[name]
    torch.library.opcheck(torch.ops.oneshot.elastic_dwconv,
                          (x.clone().requires_grad_(), weight.clone().requires_grad_(), kernel, stride))


@pytest.mark.parametrize("kernel, stride, cmax", [(4, 1, 8), (9, 1, 8), (3, 0, 8), (3, 1, 2)])
def test_bad_arguments_raise_on_both_paths(kernel: int, stride: int, cmax: int) -> None:
    x, weight = torch.randn(1, 4, 5, 5), torch.randn(cmax, 1, 7, 7)
    with pytest.raises(ValueError):
        elastic_dwconv_reference(x, weight, kernel, stride)
    with pytest.raises((RuntimeError, ValueError)):
        elastic_dwconv(x, weight, kernel, stride)
