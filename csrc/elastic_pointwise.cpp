// elastic_pointwise: 1x1 convolution over the leading C = x.size(1) input channels and the first
// `out_channels` output channels of the largest weight [Omax, Imax, 1, 1] (and bias), without a sliced copy.
//
//   out[n, o, h, w] = bias[o] + sum_{c < C} weight[o, c] * x[n, c, h, w]          (o < out_channels)
//
// On channels-last input the pixels' channel vectors are the rows of one [N*H*W, C] matrix, so the layer is
// a single GEMM whose BLAS call reads the weight slice in place through its leading dimension (conv2d would
// copy the slice and, at small sizes, take its slow im2col path); the result is already channels-last.
// Other layouts run conv2d on the slice. CompositeImplicitAutograd: gradients come from the ATen ops, on every
// device. The point of a C++ op here is overhead: one dispatcher call instead of about eight Python-level
// tensor ops per layer, which dominate a small network at batch 1. The pure-PyTorch reference is
// supernet.kernels.elastic_pointwise_reference.
#include <torch/library.h>
#include <torch/types.h>

namespace oneshot {
namespace {

at::Tensor elastic_pointwise(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                             int64_t out_channels) {
  TORCH_CHECK(x.dim() == 4, "elastic_pointwise: x must be 4-D [N, C, H, W], got ", x.dim(), "-D");
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == 1 && weight.size(3) == 1,
              "elastic_pointwise: weight must be [Omax, Imax, 1, 1], got ", weight.sizes());
  TORCH_CHECK(x.size(1) <= weight.size(1), "elastic_pointwise: x has ", x.size(1), " channels, weight only ",
              weight.size(1));
  TORCH_CHECK(out_channels >= 1 && out_channels <= weight.size(0), "elastic_pointwise: out_channels must be in [1, ",
              weight.size(0), "], got ", out_channels);
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const auto slice = weight.narrow(0, 0, out_channels).narrow(1, 0, c);
  at::Tensor b;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) >= out_channels, "elastic_pointwise: bias too short");
    b = bias->narrow(0, 0, out_channels);
  }
  if (!x.is_contiguous(at::MemoryFormat::ChannelsLast)) return at::conv2d(x, slice, b);
  const auto rows = x.permute({0, 2, 3, 1}).reshape({n * h * w, c});
  const auto matrix = slice.flatten(1).t();
  const auto y = b.defined() ? at::addmm(b, rows, matrix) : at::mm(rows, matrix);
  return y.view({n, h, w, out_channels}).permute({0, 3, 1, 2});
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(oneshot, m) {
  m.def("elastic_pointwise(Tensor x, Tensor weight, Tensor? bias, int out_channels) -> Tensor");
}

TORCH_LIBRARY_IMPL(oneshot, CompositeImplicitAutograd, m) { m.impl("elastic_pointwise", &elastic_pointwise); }

}  // namespace oneshot
