"""Fused mixed op: the C++ composite against K separate convolutions (its reference), from one sample list."""
import pytest
import torch

from supernet.kernels import kernel_backend, mixed_dwconv, mixed_dwconv_reference
from tests.layouts import random_input

BUILT = kernel_backend() == "cpp"


def sample(n: int, c: int, h: int, w: int, kernels: tuple[int, ...], stride: int, extra: int = 0,
           dtype: torch.dtype = torch.float64, layout: str = "contiguous", seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = random_input(n, c, h, w, g, dtype, layout)
    weights = [torch.randn(c + extra, 1, k, k, generator=g, dtype=dtype) for k in kernels]
    return x, weights, torch.randn(len(kernels), generator=g, dtype=dtype), stride


SAMPLES = {
    "k3-5-7": sample(2, 6, 8, 8, (3, 5, 7), 1),
    "k3-5-7-stride2-odd": sample(2, 5, 9, 7, (3, 5, 7), 2, extra=3),
    "one-candidate": sample(1, 4, 6, 6, (5,), 1),
    "same-size-twice": sample(2, 3, 5, 5, (3, 3), 1),
    "one-channel": sample(3, 1, 5, 5, (3, 7), 2),
    "k7-on-4x4": sample(2, 3, 4, 4, (3, 7), 1),
    "channels-last": sample(2, 8, 6, 6, (3, 5, 7), 1, layout="channels_last"),
    "non-contiguous": sample(2, 4, 6, 6, (3, 5), 2, layout="strided"),
    "empty-batch": sample(0, 4, 6, 6, (3, 5, 7), 1),
    "float32": sample(2, 20, 8, 8, (3, 5, 7), 1, dtype=torch.float32),
}


def leaves(x, weights, alpha):
    return x.clone().requires_grad_(), [w.clone().requires_grad_() for w in weights], alpha.clone().requires_grad_()


@pytest.mark.parametrize("name", SAMPLES)
def test_values_and_gradients_match_reference(name: str) -> None:
    x, weights, alpha, stride = SAMPLES[name]
    tol = {"atol": 1e-4, "rtol": 1e-4} if x.dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-10}
    ours, ref = leaves(x, weights, alpha), leaves(x, weights, alpha)
    out = mixed_dwconv(ours[0], ours[1], ours[2], stride)
    expected = mixed_dwconv_reference(ref[0], ref[1], ref[2], stride)
    torch.testing.assert_close(out, expected, **tol)
    grad = torch.randn_like(expected)
    got = torch.autograd.grad(out, [ours[0], *ours[1], ours[2]], grad)
    want = torch.autograd.grad(expected, [ref[0], *ref[1], ref[2]], grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("name", [n for n, s in SAMPLES.items() if s[0].dtype == torch.float64 and len(s[0])])
@pytest.mark.slow
def test_gradcheck(name: str) -> None:
    x, weights, alpha, stride = SAMPLES[name]
    k = len(weights)
    inputs = (x.clone().requires_grad_(), *[w.clone().requires_grad_() for w in weights], alpha.clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda *t: mixed_dwconv(t[0], list(t[1:1 + k]), t[1 + k], stride), inputs)


@pytest.mark.skipif(not BUILT, reason="C++ extension not built")
@pytest.mark.parametrize("name", SAMPLES)
def test_opcheck(name: str) -> None:
    x, weights, alpha, stride = SAMPLES[name]
    torch.library.opcheck(torch.ops.oneshot.mixed_dwconv, (*leaves(x, weights, alpha), stride))


def test_one_pass_equals_sum_of_convolutions_for_shared_weights() -> None:
    """Candidates cut from one largest kernel (weight sharing) are a valid input too."""
    x, weights, alpha, stride = SAMPLES["k3-5-7"]
    full = weights[-1]
    shared = [full[:, :, 2:5, 2:5], full[:, :, 1:6, 1:6], full]
    torch.testing.assert_close(mixed_dwconv(x, shared, alpha, stride), mixed_dwconv_reference(x, shared, alpha, stride))


@pytest.mark.parametrize("bad", ["even-kernel", "too-few-channels", "alpha-length", "no-candidates"])
def test_bad_arguments_raise_on_both_paths(bad: str) -> None:
    x, alpha = torch.randn(1, 4, 5, 5), torch.randn(2)
    weights = [torch.randn(4, 1, 3, 3), torch.randn(4, 1, 5, 5)]
    if bad == "even-kernel":
        weights[1] = torch.randn(4, 1, 4, 4)
    elif bad == "too-few-channels":
        weights[0] = torch.randn(2, 1, 3, 3)
    elif bad == "alpha-length":
        alpha = torch.randn(3)
    else:
        weights, alpha = [], torch.randn(0)
    with pytest.raises(ValueError):
        mixed_dwconv_reference(x, weights, alpha)
    with pytest.raises((RuntimeError, ValueError)):
        mixed_dwconv(x, weights, alpha)
