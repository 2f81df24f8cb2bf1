// elastic_dwconv: the shapes and argument checks that the CPU (csrc/elastic_dwconv.cpp) and CUDA
// (csrc/cuda/elastic_dwconv.cu) kernels share; each device adds its own dtype checks.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace oneshot {
namespace dwconv {

// Sizes of one call: input n x c x h x w, output ho x wo; the window is `kernel` wide, starting at `off` in
// the largest weight's `full` x `full` taps; "same" padding `pad`.
struct Geometry {
  int64_t n, c, h, w, ho, wo, kernel, stride, pad, off, full;
};

inline Geometry check(const at::Tensor& x, const at::Tensor& weight, int64_t kernel, int64_t stride) {
  TORCH_CHECK(x.dim() == 4, "elastic_dwconv: x must be 4-D [N, C, H, W], got ", x.dim(), "-D");
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == 1 && weight.size(2) == weight.size(3),
              "elastic_dwconv: weight must be [Cmax, 1, K, K]");
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(), "elastic_dwconv: x and weight dtypes differ");
  TORCH_CHECK(x.device() == weight.device(), "elastic_dwconv: x and weight are on different devices, ", x.device(),
              " and ", weight.device());
  TORCH_CHECK(x.size(1) <= weight.size(0), "elastic_dwconv: x has ", x.size(1), " channels, weight only ",
              weight.size(0));
  TORCH_CHECK(kernel > 0 && kernel % 2 == 1 && kernel <= weight.size(2),
              "elastic_dwconv: kernel must be odd and at most ", weight.size(2), ", got ", kernel);
  TORCH_CHECK(stride >= 1, "elastic_dwconv: stride must be positive");
  Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), 0, 0, kernel, stride, kernel / 2,
             (weight.size(2) - kernel) / 2, weight.size(2)};
  g.ho = (g.h + 2 * g.pad - kernel) / stride + 1;
  g.wo = (g.w + 2 * g.pad - kernel) / stride + 1;
  return g;
}

}  // namespace dwconv
}  // namespace oneshot
