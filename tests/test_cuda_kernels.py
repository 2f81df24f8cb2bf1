"""CUDA kernels against their pure-PyTorch references, from the CPU tests' sample list (skipped without a GPU).

Run with ``python -m pytest tests -k cuda``. The reference runs on the GPU too (torch's own conv2d), in float64
for the float64 samples and in float32 for the half types, whose results are compared loosely.
"""
import pytest
import torch

from supernet.kernels import (_DWCONV_CUDA, elastic_dwconv, elastic_dwconv_reference, mixed_dwconv,
                              mixed_dwconv_reference)
from tests.test_elastic_dwconv import SAMPLES
from tests.test_mixed_dwconv import SAMPLES as MIXED_SAMPLES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

HALF_TYPES = [torch.float16, torch.bfloat16]
TOLERANCE = {torch.float64: {"atol": 1e-10, "rtol": 1e-10}, torch.float32: {"atol": 1e-5, "rtol": 1e-5},
             torch.float16: {"atol": 1e-2, "rtol": 1e-2}, torch.bfloat16: {"atol": 5e-2, "rtol": 5e-2}}


@pytest.fixture(autouse=True)
def exact_float32_reference():
    """cuDNN may run the float32 reference in TF32, far looser than the tolerances here; keep it IEEE."""
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        yield


def on_cuda(name: str, dtype: torch.dtype | None = None) -> tuple:
    """The sample moved to the GPU (keeping a channels-last or strided layout), optionally cast to `dtype`."""
    x, weight, kernel, stride = SAMPLES[name]
    dtype = dtype or x.dtype
    if name == "non-contiguous":  # .to() would make it contiguous: rebuild the strided view on the GPU
        wide = torch.zeros(*x.shape[:3], 2 * x.shape[3], dtype=dtype, device="cuda")
        wide[..., ::2] = x.to("cuda", dtype)
        x_cuda = wide[..., ::2]
    else:
        x_cuda = x.to("cuda", dtype)  # .to keeps channels-last (preserve_format)
    assert x_cuda.stride() == x.stride() or name == "non-contiguous"
    return x_cuda, weight.to("cuda", dtype), kernel, stride


def values_and_grads(fn, x: torch.Tensor, weight: torch.Tensor, kernel: int, stride: int, grad: torch.Tensor):
    x, weight = x.clone().requires_grad_(), weight.clone().requires_grad_()
    out = fn(x, weight, kernel, stride)
    out.backward(grad)
    return out, x.grad, weight.grad


def test_cuda_build_registers_the_cuda_kernel() -> None:
    assert _DWCONV_CUDA, "the extension was built without its CUDA kernels (ONESHOT_FORCE_CUDA=1 to force them)"


@pytest.mark.parametrize("name", SAMPLES)
def test_cuda_values_and_gradients_match_reference(name: str) -> None:
    x, weight, kernel, stride = on_cuda(name)
    grad = torch.randn(elastic_dwconv_reference(x, weight, kernel, stride).shape, dtype=x.dtype, device="cuda")
    got = values_and_grads(elastic_dwconv, x, weight, kernel, stride, grad)
    want = values_and_grads(elastic_dwconv_reference, x, weight, kernel, stride, grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOLERANCE[x.dtype])
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        assert got[0].is_contiguous(memory_format=torch.channels_last)
        assert got[1].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", HALF_TYPES, ids=str)
@pytest.mark.parametrize("name", SAMPLES)
def test_cuda_half_types_match_float32_reference(name: str, dtype: torch.dtype) -> None:
    x, weight, kernel, stride = on_cuda(name, dtype)
    grad = torch.randn(elastic_dwconv_reference(x.float(), weight.float(), kernel, stride).shape, device="cuda")
    got = values_and_grads(elastic_dwconv, x, weight, kernel, stride, grad.to(dtype))
    want = values_and_grads(elastic_dwconv_reference, x.float(), weight.float(), kernel, stride,
                            grad.to(dtype).float())
    for g, w in zip(got, want):
        assert g.dtype == dtype
        torch.testing.assert_close(g.float(), w, **TOLERANCE[dtype])


@pytest.mark.parametrize("name", [n for n, s in SAMPLES.items() if s[0].dtype == torch.float64 and len(s[0])])
def test_cuda_gradcheck(name: str) -> None:
    x, weight, kernel, stride = on_cuda(name)
    assert torch.autograd.gradcheck(lambda a, b: elastic_dwconv(a, b, kernel, stride),
                                    (x.clone().requires_grad_(), weight.clone().requires_grad_()))


@pytest.mark.parametrize("name", SAMPLES)
def test_cuda_opcheck(name: str) -> None:
    x, weight, kernel, stride = on_cuda(name)
    torch.library.opcheck(torch.ops.oneshot.elastic_dwconv,
                          (x.clone().requires_grad_(), weight.clone().requires_grad_(), kernel, stride))


def test_cuda_large_shapes_and_strided_weight_match_reference() -> None:
    """More blocks than the small samples (grid-stride loops, weight reductions split over blocks, a partial
    channel tile), and a weight that is a strided view of a larger one, read in place through its strides."""
    g = torch.Generator(device="cuda").manual_seed(0)
    for layout in (torch.contiguous_format, torch.channels_last):
        for shape, kernel, stride in [((8, 40, 33, 29), 3, 1), ((8, 40, 33, 29), 5, 2), ((4, 2, 40, 40), 7, 1),
                                      ((3, 5, 13, 10), 3, 3)]:
            x = torch.randn(*shape, device="cuda", generator=g).contiguous(memory_format=layout)
            big = torch.randn(48, 1, 9, 9, device="cuda", generator=g)
            grad = torch.randn(elastic_dwconv_reference(x, big[:, :, 1:8, 1:8], kernel, stride).shape, device="cuda",
                               generator=g)
            results = []
            for fn in (elastic_dwconv, elastic_dwconv_reference):
                xs, bigs = x.clone().requires_grad_(), big.clone().requires_grad_()
                out = fn(xs, bigs[:, :, 1:8, 1:8], kernel, stride)
                out.backward(grad)
                results.append((out, xs.grad, bigs.grad))
            for a, b in zip(*results):
                torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_cuda_bad_arguments_raise() -> None:
    x, weight = torch.randn(1, 4, 5, 5, device="cuda"), torch.randn(8, 1, 7, 7, device="cuda")
    with pytest.raises(RuntimeError, match="same"):
        torch.ops.oneshot.elastic_dwconv(x, weight.cpu(), 3, 1)
    with pytest.raises(RuntimeError, match="dtypes differ"):
        torch.ops.oneshot.elastic_dwconv(x, weight.double(), 3, 1)
    with pytest.raises(RuntimeError, match="odd"):
        torch.ops.oneshot.elastic_dwconv(x, weight, 4, 1)


@pytest.mark.parametrize("name", MIXED_SAMPLES)
def test_cuda_mixed_op_matches_reference(name: str) -> None:
    """The fused mixed op is a composite over elastic_dwconv, so on CUDA it runs the CUDA kernel."""
    x, weights, alpha, stride = MIXED_SAMPLES[name]
    grads = []
    for fn in (mixed_dwconv, mixed_dwconv_reference):
        leaves = [x.to("cuda").requires_grad_(), *[w.to("cuda").requires_grad_() for w in weights],
                  alpha.to("cuda").requires_grad_()]
        out = fn(leaves[0], leaves[1:-1], leaves[-1], stride)
        grads.append([out, *torch.autograd.grad(out, leaves, torch.ones_like(out))])
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, **TOLERANCE[x.dtype])
