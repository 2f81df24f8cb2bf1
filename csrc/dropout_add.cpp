// dropout_add: a residual connection with dropout on the branch, in one pass and without a stored mask.
//
//   out[i] = x[i] + keep(i) * y[i] / (1 - p)        keep(i) = hash(i xor seed) >= p * 2^32
//   dropout_scale(grad)[i] = keep(i) * grad[i] / (1 - p)     (the gradient for y; x's is grad itself)
//
// i is the element's index in row-major order. The mask comes from a counter-based hash (Thomas Mueller's
// 32-bit integer finaliser, a bijection of [0, 2^32)), so the backward recomputes it from the seed instead of
// keeping a byte per element, and every thread draws its own part with no shared generator: torch's CPU
// dropout draws a Bernoulli per element from one mt19937 and took 2.4 ms for a [64, 64, 96] batch here,
// 25 times a GELU of the same size. The seed is drawn from torch's generator by the caller, so
// torch.manual_seed still decides the masks. Tensors must have fewer than 2^32 elements.
//
// This file holds the schemas and the CPU kernels; the pure-PyTorch reference that computes the same mask is
// supernet.kernels.dropout_add_reference.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace oneshot {
namespace {

inline uint32_t mix(uint32_t x) {
  x = ((x >> 16) ^ x) * 0x45d9f3bu;
  x = ((x >> 16) ^ x) * 0x45d9f3bu;
  return (x >> 16) ^ x;
}

void check(const at::Tensor& t, double p, const char* name) {
  TORCH_CHECK(p >= 0.0 && p <= 1.0, name, ": p must be in [0, 1], got ", p);
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
              ": tensors must be float32 or float64");
  TORCH_CHECK(t.numel() < (int64_t(1) << 32), name, ": at most 2^32 - 1 elements, got ", t.numel());
}

// out[i] = x[i] + keep(i) * y[i] * scale for i in [begin, end) (x omitted: WithX false). Its own function with
// restrict pointers and by-value scalars, so that the compiler vectorises the loop.
template <typename scalar_t, bool WithX>
void apply(const scalar_t* __restrict__ x, const scalar_t* __restrict__ y, scalar_t* __restrict__ out,
           int64_t begin, int64_t end, uint32_t threshold, scalar_t scale, uint32_t seed) {
  for (int64_t i = begin; i < end; ++i) {
    const scalar_t m = mix(static_cast<uint32_t>(i) ^ seed) >= threshold ? scale : scalar_t(0);
    if constexpr (WithX) {
      out[i] = x[i] + y[i] * m;
    } else {
      out[i] = y[i] * m;
    }
  }
}

// out = x + keep * y * scale over the flat contiguous buffers, in parallel.
template <typename scalar_t, bool WithX>
void run(const scalar_t* x, const scalar_t* y, scalar_t* out, int64_t n, double p, int64_t seed) {
  // The first hash value that keeps an element, round(p * 2^32) as the reference computes it; when that is
  // 2^32 nothing is kept, which a scale of 0 says, so the threshold fits 32 bits and the loop vectorises.
  const uint64_t keep_from = static_cast<uint64_t>(std::nearbyint(p * 4294967296.0));
  const scalar_t scale = keep_from > 0xffffffffu ? scalar_t(0) : static_cast<scalar_t>(1.0 / (1.0 - p));
  const uint32_t threshold = static_cast<uint32_t>(std::min<uint64_t>(keep_from, 0xffffffffu));
  const uint32_t s = static_cast<uint32_t>(seed);
  at::parallel_for(0, n, 16384, [&](int64_t begin, int64_t end) {
    apply<scalar_t, WithX>(x, y, out, begin, end, threshold, scale, s);
  });
}

}  // namespace

at::Tensor dropout_add_cpu(const at::Tensor& x, const at::Tensor& y, double p, int64_t seed) {
  check(y, p, "dropout_add");
  TORCH_CHECK(x.sizes() == y.sizes() && x.scalar_type() == y.scalar_type(),
              "dropout_add: x and y must have the same shape and dtype, got ", x.sizes(), " and ", y.sizes());
  const auto xc = x.contiguous(), yc = y.contiguous();
  auto out = at::empty_like(yc, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(yc.scalar_type(), "dropout_add_cpu", [&] {
    run<scalar_t, true>(xc.data_ptr<scalar_t>(), yc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), yc.numel(), p, seed);
  });
  return out;
}

at::Tensor dropout_scale_cpu(const at::Tensor& grad, double p, int64_t seed) {
  check(grad, p, "dropout_scale");
  const auto gc = grad.contiguous();
  auto out = at::empty_like(gc, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(gc.scalar_type(), "dropout_scale_cpu", [&] {
    run<scalar_t, false>(nullptr, gc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), gc.numel(), p, seed);
  });
  return out;
}

TORCH_LIBRARY_FRAGMENT(oneshot, m) {
  m.def("dropout_add(Tensor x, Tensor y, float p, int seed) -> Tensor");
  m.def("dropout_scale(Tensor grad, float p, int seed) -> Tensor");
}

TORCH_LIBRARY_IMPL(oneshot, CPU, m) {
  m.impl("dropout_add", &dropout_add_cpu);
  m.impl("dropout_scale", &dropout_scale_cpu);
}

}  // namespace oneshot
