// elastic_dwconv: depthwise convolution on the centre `kernel` x `kernel` window and the leading C channels of
// the largest weight [Cmax, 1, K, K], with "same" padding (kernel / 2), without materialising a sliced copy.
//
//   out[n, c, oh, ow] = sum_{i,j < kernel} x[n, c, oh*stride - pad + i, ow*stride - pad + j] * w[c, 0, off+i, off+j]
//
// The backward returns the gradient of x and of the whole weight (zero outside the window and channels used),
// as autograd of the slicing reference would. This file holds the schemas and the CPU kernels; the
// pure-PyTorch reference is supernet.kernels.elastic_dwconv_reference.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <tuple>
#include <utility>

namespace oneshot {
namespace {

struct Geometry {
  int64_t n, c, h, w, ho, wo, kernel, stride, pad, off, full;
};

Geometry check(const at::Tensor& x, const at::Tensor& weight, int64_t kernel, int64_t stride) {
  TORCH_CHECK(x.dim() == 4, "elastic_dwconv: x must be 4-D [N, C, H, W], got ", x.dim(), "-D");
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == 1 && weight.size(2) == weight.size(3),
              "elastic_dwconv: weight must be [Cmax, 1, K, K]");
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(), "elastic_dwconv: x and weight dtypes differ");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "elastic_dwconv: the CPU kernel takes float32 or float64");
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

// Output columns ow whose input column ow * stride - pad + j lies inside [0, w): [lo, hi). Iterating only over
// them keeps the inner loops free of bounds checks, so the compiler vectorises them.
inline std::pair<int64_t, int64_t> columns(const Geometry& g, int64_t j) {
  const int64_t shift = g.pad - j;  // iw = ow * stride - shift
  int64_t lo = shift > 0 ? (shift + g.stride - 1) / g.stride : 0;
  int64_t hi = (g.w - 1 + shift) >= 0 ? (g.w - 1 + shift) / g.stride + 1 : 0;
  return {std::min(lo, g.wo), std::min(hi, g.wo)};
}

}  // namespace

at::Tensor elastic_dwconv_cpu(const at::Tensor& x_in, const at::Tensor& weight_in, int64_t kernel, int64_t stride) {
  const Geometry g = check(x_in, weight_in, kernel, stride);
  const auto x = x_in.contiguous();
  const auto weight = weight_in.contiguous();
  auto out = at::zeros({g.n, g.c, g.ho, g.wo}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "elastic_dwconv_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = weight.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, g.n * g.c, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t c = plane % g.c;
        const scalar_t* xin = xp + plane * g.h * g.w;
        const scalar_t* wk = wp + c * g.full * g.full;
        scalar_t* dst = op + plane * g.ho * g.wo;
        for (int64_t oh = 0; oh < g.ho; ++oh) {
          for (int64_t i = 0; i < g.kernel; ++i) {
            const int64_t ih = oh * g.stride - g.pad + i;
            if (ih < 0 || ih >= g.h) continue;
            const scalar_t* row = xin + ih * g.w;
            const scalar_t* wrow = wk + (g.off + i) * g.full + g.off;
            scalar_t* out_row = dst + oh * g.wo;
            for (int64_t j = 0; j < g.kernel; ++j) {
              const auto [lo, hi] = columns(g, j);
              const scalar_t wv = wrow[j];
              const scalar_t* src = row + j - g.pad;
              if (g.stride == 1) {
_Pragma("omp simd")
                for (int64_t ow = lo; ow < hi; ++ow) out_row[ow] += wv * src[ow];
              } else {
                for (int64_t ow = lo; ow < hi; ++ow) out_row[ow] += wv * src[ow * g.stride];
              }
            }
          }
        }
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> elastic_dwconv_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                               const at::Tensor& weight_in, int64_t kernel,
                                                               int64_t stride) {
  const Geometry g = check(x_in, weight_in, kernel, stride);
  TORCH_CHECK(grad_in.sizes() == at::IntArrayRef({g.n, g.c, g.ho, g.wo}),
              "elastic_dwconv_backward: grad has the wrong shape");
  const auto grad = grad_in.contiguous();
  const auto x = x_in.contiguous();
  const auto weight = weight_in.contiguous();
  auto grad_x = at::zeros_like(x);
  auto grad_w = at::zeros_like(weight);
  if (grad.numel() == 0) return {grad_x, grad_w};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "elastic_dwconv_backward_cpu", [&] {
    const scalar_t* gp = grad.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = weight.data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.data_ptr<scalar_t>();
    scalar_t* gwp = grad_w.data_ptr<scalar_t>();
    // grad_x: every (n, c) plane is independent.
    at::parallel_for(0, g.n * g.c, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t c = plane % g.c;
        const scalar_t* go = gp + plane * g.ho * g.wo;
        const scalar_t* wk = wp + c * g.full * g.full;
        scalar_t* gx = gxp + plane * g.h * g.w;
        for (int64_t oh = 0; oh < g.ho; ++oh) {
          for (int64_t i = 0; i < g.kernel; ++i) {
            const int64_t ih = oh * g.stride - g.pad + i;
            if (ih < 0 || ih >= g.h) continue;
            const scalar_t* wrow = wk + (g.off + i) * g.full + g.off;
            const scalar_t* go_row = go + oh * g.wo;
            for (int64_t j = 0; j < g.kernel; ++j) {
              const auto [lo, hi] = columns(g, j);
              const scalar_t wv = wrow[j];
              scalar_t* dst = gx + ih * g.w + j - g.pad;
              if (g.stride == 1) {
_Pragma("omp simd")
                for (int64_t ow = lo; ow < hi; ++ow) dst[ow] += wv * go_row[ow];
              } else {
                for (int64_t ow = lo; ow < hi; ++ow) dst[ow * g.stride] += wv * go_row[ow];
              }
            }
          }
        }
      }
    });
    // grad_w: one channel per task, summing over the batch, so no two tasks write the same weight.
    at::parallel_for(0, g.c, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        scalar_t* gw = gwp + c * g.full * g.full;
        for (int64_t i = 0; i < g.kernel; ++i) {
          for (int64_t j = 0; j < g.kernel; ++j) {
            const auto [lo, hi] = columns(g, j);
            scalar_t acc = 0;
            for (int64_t n = 0; n < g.n; ++n) {
              const scalar_t* go = gp + (n * g.c + c) * g.ho * g.wo;
              const scalar_t* xin = xp + (n * g.c + c) * g.h * g.w;
              for (int64_t oh = 0; oh < g.ho; ++oh) {
                const int64_t ih = oh * g.stride - g.pad + i;
                if (ih < 0 || ih >= g.h) continue;
                const scalar_t* go_row = go + oh * g.wo;
                const scalar_t* src = xin + ih * g.w + j - g.pad;
                if (g.stride == 1) {
_Pragma("omp simd reduction(+ : acc)")
                  for (int64_t ow = lo; ow < hi; ++ow) acc += go_row[ow] * src[ow];
                } else {
                  for (int64_t ow = lo; ow < hi; ++ow) acc += go_row[ow] * src[ow * g.stride];
                }
              }
            }
            gw[(g.off + i) * g.full + g.off + j] = acc;
          }
        }
      }
    });
  });
  return {grad_x, grad_w};
}

TORCH_LIBRARY_FRAGMENT(oneshot, m) {
  m.def("elastic_dwconv(Tensor x, Tensor weight, int kernel, int stride) -> Tensor");
  m.def("elastic_dwconv_backward(Tensor grad, Tensor x, Tensor weight, int kernel, int stride) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(oneshot, CPU, m) {
  m.impl("elastic_dwconv", &elastic_dwconv_cpu);
  m.impl("elastic_dwconv_backward", &elastic_dwconv_backward_cpu);
}

}  // namespace oneshot
