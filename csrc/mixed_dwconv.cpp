// mixed_dwconv: the weighted sum of K depthwise convolutions of different (odd) kernel sizes, the primitive of
// weighted / differentiable mixed ops (DARTS, FBNet, ProxylessNAS):
//
//   out = sum_k alpha[k] * dwconv(x, weights[k][:C], kernel_k, stride)      ("same" padding kernel_k / 2)
//
// computed in one pass over x. With "same" padding every candidate reads the same centred window, so the sum
// of the K convolutions is one convolution with the combined kernel  sum_k alpha[k] * pad(weights[k][:C])
// (each zero-padded to the largest size): a few thousand multiply-adds on the weights, then one elastic
// depthwise convolution instead of K. Registered as CompositeImplicitAutograd: gradients for x, every weight
// and alpha flow through the combination and oneshot::elastic_dwconv's own backward, on every device that
// has an elastic_dwconv kernel. The pure-PyTorch reference (K separate convolutions) is
// supernet.kernels.mixed_dwconv_reference.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>

namespace oneshot {
namespace {

at::Tensor mixed_dwconv(const at::Tensor& x, at::TensorList weights, const at::Tensor& alpha, int64_t stride) {
  TORCH_CHECK(x.dim() == 4, "mixed_dwconv: x must be 4-D [N, C, H, W], got ", x.dim(), "-D");
  TORCH_CHECK(!weights.empty(), "mixed_dwconv: needs at least one candidate weight");
  TORCH_CHECK(alpha.dim() == 1 && alpha.size(0) == static_cast<int64_t>(weights.size()),
              "mixed_dwconv: alpha must be 1-D with one entry per candidate (", weights.size(), "), got shape ",
              alpha.sizes());
  const int64_t channels = x.size(1);
  int64_t largest = 0;
  for (const auto& w : weights) {
    TORCH_CHECK(w.dim() == 4 && w.size(1) == 1 && w.size(2) == w.size(3) && w.size(2) % 2 == 1,
                "mixed_dwconv: every weight must be [Cmax, 1, k, k] with k odd, got ", w.sizes());
    TORCH_CHECK(w.size(0) >= channels, "mixed_dwconv: x has ", channels, " channels, a weight only ", w.size(0));
    TORCH_CHECK(w.scalar_type() == x.scalar_type() && alpha.scalar_type() == x.scalar_type(),
                "mixed_dwconv: x, weights and alpha must share one dtype");
    largest = std::max(largest, w.size(2));
  }
  at::Tensor combined;
  for (size_t k = 0; k < weights.size(); ++k) {
    const int64_t pad = (largest - weights[k].size(2)) / 2;
    auto term = at::constant_pad_nd(weights[k].narrow(0, 0, channels) * alpha[k], {pad, pad, pad, pad});
    combined = combined.defined() ? combined + term : term;
  }
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("oneshot::elastic_dwconv", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, int64_t)>();
  return op.call(x, combined, largest, stride);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(oneshot, m) {
  m.def("mixed_dwconv(Tensor x, Tensor[] weights, Tensor alpha, int stride) -> Tensor");
}

TORCH_LIBRARY_IMPL(oneshot, CompositeImplicitAutograd, m) { m.impl("mixed_dwconv", &mixed_dwconv); }

}  // namespace oneshot
