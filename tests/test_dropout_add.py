"""Residual dropout (``oneshot::dropout_add``): the C++ kernel against its reference, bit for bit, and its mask
against what dropout must be."""
import pytest
import torch

from supernet.kernels import dropout_add, dropout_add_reference, dropout_keep, dropout_scale_reference, kernel_backend

BUILT = kernel_backend() == "cpp"
needs_kernel = pytest.mark.skipif(not BUILT, reason="C++ extension not built")


def sample(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, transposed: bool = False) -> tuple:
    g = torch.Generator().manual_seed(sum(shape))
    x, y = torch.randn(*shape, generator=g, dtype=dtype), torch.randn(*shape, generator=g, dtype=dtype)
    if transposed:  # not contiguous: the kernel indexes the row-major copy, as the reference does
        x, y = x.transpose(0, -1), y.transpose(0, -1)
    return x, y


SAMPLES = {
    "batch-of-sentences": sample((4, 16, 24)),
    "float64": sample((3, 7, 5), torch.float64),
    "transposed": sample((6, 9), transposed=True),
    "one-element": sample((1,)),
    "odd-length": sample((1001,)),
}
PS = (0.0, 0.1, 0.5, 1.0)


@needs_kernel
@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("name", SAMPLES)
def test_kernel_equals_reference_in_values_and_gradients(name: str, p: float) -> None:
    x, y = SAMPLES[name]
    results = []
    for fn in (torch.ops.oneshot.dropout_add, dropout_add_reference):
        leaves = [x.clone().requires_grad_(), y.clone().requires_grad_()]
        out = fn(*leaves, p, 123456789)
        grad = torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape) % 5 - 2
        results.append([out, *torch.autograd.grad(out, leaves, grad)])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(results[0][1], grad)  # x's gradient passes through untouched


@needs_kernel
@pytest.mark.parametrize("name", SAMPLES)
def test_opcheck_and_gradcheck(name: str) -> None:
    x, y = SAMPLES[name]
    torch.library.opcheck(torch.ops.oneshot.dropout_add, (x.clone().requires_grad_(), y.clone().requires_grad_(), 0.3, 7))
    torch.library.opcheck(torch.ops.oneshot.dropout_scale, (y.clone().requires_grad_(), 0.3, 7))
    xd, yd = (t.double().requires_grad_() for t in (x, y))
    assert torch.autograd.gradcheck(lambda a, b: torch.ops.oneshot.dropout_add(a, b, 0.3, 7), (xd, yd))
    assert torch.autograd.gradgradcheck(lambda a, b: torch.ops.oneshot.dropout_add(a, b, 0.3, 7), (xd, yd))


@pytest.mark.parametrize("p", (0.1, 0.5))
def test_the_mask_keeps_one_minus_p_independently_of_position_and_seed(p: float) -> None:
    n = 1 << 18
    masks = torch.stack([dropout_keep(n, p, seed) for seed in (0, 1, 2**31 + 5)]).float()
    sigma = (p * (1 - p) / n) ** 0.5
    assert ((masks.mean(1) - (1 - p)).abs() < 5 * sigma).all()
    centred = masks - masks.mean(1, keepdim=True)
    neighbours = (centred[:, 1:] * centred[:, :-1]).mean(1) / centred.var(1)
    rows = centred.view(3, 512, 512)
    columns = (rows[:, :, 1:] * rows[:, :, :-1]).mean((1, 2)) / centred.var(1)  # the next row's element: i + 512
    seeds = (centred[0] * centred[1]).mean() / centred.var(1)[0]
    assert neighbours.abs().max() < 5 / n ** 0.5 and columns.abs().max() < 6 / n ** 0.5 and seeds.abs() < 5 / n ** 0.5


def test_the_wrapper_scales_kept_elements_and_follows_torch_manual_seed() -> None:
    x, y = torch.zeros(64, 64), torch.ones(64, 64)
    torch.manual_seed(3)
    first = dropout_add(x, y, 0.25, True)
    torch.manual_seed(3)
    assert torch.equal(dropout_add(x, y, 0.25, True), first)
    assert torch.equal(first.unique(), torch.tensor([0.0, 4 / 3]))
    assert not torch.equal(dropout_add(x, y, 0.25, True), first)  # the next draw has another mask
    assert torch.equal(dropout_add(x, y, 0.25, False), x + y) and torch.equal(dropout_add(x, y, 0.0, True), x + y)


def test_the_scale_reference_is_the_gradient_of_the_reference() -> None:
    y = torch.randn(5, 6, requires_grad=True)
    grad = torch.randn(5, 6)
    (got,) = torch.autograd.grad(dropout_add_reference(torch.zeros(5, 6), y, 0.4, 99), y, grad)
    torch.testing.assert_close(got, dropout_scale_reference(grad, 0.4, 99), rtol=0, atol=0)


def test_bad_arguments_raise_on_both_paths() -> None:
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="p must be in"):
        dropout_add_reference(x, x, 1.5, 0)
    with pytest.raises(ValueError, match="same shape"):
        dropout_add_reference(x, x[:2], 0.1, 0)
    if BUILT:
        with pytest.raises(RuntimeError, match="p must be in"):
            torch.ops.oneshot.dropout_add(x, x, -0.1, 0)
        with pytest.raises(RuntimeError, match="same shape"):
            torch.ops.oneshot.dropout_add(x, x[:2], 0.1, 0)
        with pytest.raises(RuntimeError, match="float32 or float64"):
            torch.ops.oneshot.dropout_scale(x.half(), 0.1, 0)
