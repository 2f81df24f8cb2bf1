"""Elastic batch norm: the C++ composite against its reference, running statistics included."""
import pytest
import torch

from supernet.kernels import elastic_batch_norm, elastic_batch_norm_reference, kernel_backend

BUILT = kernel_backend() == "cpp"


def sample(n: int, c: int, cmax: int, training: bool, layout: str = "contiguous",
           dtype: torch.dtype = torch.float64, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, 3, 4, generator=g, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    params = [torch.randn(cmax, generator=g, dtype=dtype) for _ in range(3)]
    var = torch.rand(cmax, generator=g, dtype=dtype) + 0.5
    return x, params[0], params[1], params[2], var, training


SAMPLES = {
    "eval-sliced": sample(3, 5, 8, False),
    "train-sliced": sample(3, 5, 8, True),
    "train-full": sample(3, 8, 8, True),
    "eval-channels-last": sample(2, 6, 9, False, layout="channels_last"),
    "train-channels-last": sample(2, 6, 9, True, layout="channels_last"),
    "one-channel": sample(4, 1, 3, True),
    "float32": sample(16, 48, 96, True, layout="channels_last", dtype=torch.float32),
}


def run(fn, x, weight, bias, mean, var, training):
    leaves = [x.clone().requires_grad_(), weight.clone().requires_grad_(), bias.clone().requires_grad_()]
    mean, var = mean.clone(), var.clone()
    out = fn(*leaves, mean, var, training, 0.1, 1e-5)
    grads = torch.autograd.grad(out, leaves, torch.ones_like(out) + torch.arange(out.numel()).reshape(out.shape) % 3)
    return [out, mean, var, *grads]


@pytest.mark.parametrize("name", SAMPLES)
def test_values_statistics_and_gradients_match_reference(name: str) -> None:
    tol = {"atol": 1e-4, "rtol": 1e-4} if SAMPLES[name][0].dtype == torch.float32 else {}
    got, want = run(elastic_batch_norm, *SAMPLES[name]), run(elastic_batch_norm_reference, *SAMPLES[name])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)
    if SAMPLES[name][-1]:
        assert not torch.equal(got[1], SAMPLES[name][3]), "training must move the running mean"


@pytest.mark.skipif(not BUILT, reason="C++ extension not built")
@pytest.mark.parametrize("name", SAMPLES)
def test_opcheck(name: str) -> None:
    x, weight, bias, mean, var, training = SAMPLES[name]
    torch.library.opcheck(torch.ops.oneshot.elastic_batch_norm,
                          (x.clone().requires_grad_(), weight.clone().requires_grad_(), bias.clone().requires_grad_(),
                           mean.clone(), var.clone(), training, 0.1, 1e-5))


def test_too_many_channels_raise_on_both_paths() -> None:
    x, p = torch.randn(2, 6, 2, 2), torch.randn(4)
    with pytest.raises(ValueError):
        elastic_batch_norm_reference(x, p, p, p.clone(), p.abs(), False, 0.1, 1e-5)
    with pytest.raises((RuntimeError, ValueError)):
        elastic_batch_norm(x, p, p, p.clone(), p.abs(), False, 0.1, 1e-5)
