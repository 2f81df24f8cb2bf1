// elastic_dwconv: depthwise convolution on the centre `kernel` x `kernel` window and the leading C channels of
// the largest weight [Cmax, 1, K, K], with "same" padding (kernel / 2), without materialising a sliced copy.
//
//   out[n, c, oh, ow] = sum_{i,j < kernel} x[n, c, oh*stride - pad + i, ow*stride - pad + j] * w[c, 0, off+i, off+j]
//
// The backward returns the gradient of x and of the whole weight (zero outside the window and channels used),
// as autograd of the slicing reference would. This file holds the schemas and the CPU kernels; the
// pure-PyTorch reference is supernet.kernels.elastic_dwconv_reference.
//
// The kernels work in channels-last (NHWC) order: every output pixel is a vector over channels, and the used
// taps of the weight are packed once per call into [tap][channel] order (kernel*kernel*C values, the kernel's
// own layout), so the channel loop reads input, weight and output contiguously and keeps its accumulators in
// registers, eight neighbouring pixels sharing each weight load. Other inputs (plain NCHW, strided) are
// converted to channels-last on the way in and their results back on the way out: one memory pass each,
// cheaper than a per-plane NCHW loop, which cannot vectorise across the 3-7 taps of a row.
// The hot loops are compiled for AVX-512, AVX2+FMA and the baseline, picked by the CPU's features at run time.
#include "elastic_dwconv.h"

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <tuple>
#include <utility>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#define ONESHOT_X86 1
#define ONESHOT_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma,prefer-vector-width=512")))
#define ONESHOT_AVX2 __attribute__((target("avx2,fma")))
#endif
#define ONESHOT_INLINE inline __attribute__((always_inline))

namespace oneshot {
namespace {

using dwconv::Geometry;
using dwconv::check;

void check_cpu_dtype(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "elastic_dwconv: the CPU kernel takes float32 or float64, got ", x.scalar_type());
}

// Results come back in the input's layout: channels-last stays channels-last, anything else is made contiguous.
at::MemoryFormat output_format(const at::Tensor& x) {
  return x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous() ? at::MemoryFormat::ChannelsLast
                                                                               : at::MemoryFormat::Contiguous;
}

// Output columns ow whose input column ow * stride - pad + j lies inside [0, w): [lo, hi).
inline std::pair<int64_t, int64_t> columns(const Geometry& g, int64_t j) {
  const int64_t shift = g.pad - j;  // iw = ow * stride - shift
  int64_t lo = shift > 0 ? (shift + g.stride - 1) / g.stride : 0;
  int64_t hi = (g.w - 1 + shift) >= 0 ? (g.w - 1 + shift) / g.stride + 1 : 0;
  return {std::min(lo, g.wo), std::min(hi, g.wo)};
}

// Taps i (or j) of output row oh (column ow) that fall inside an input of `size`: [lo, hi).
inline std::pair<int64_t, int64_t> taps(int64_t o, const Geometry& g, int64_t size) {
  const int64_t first = o * g.stride - g.pad;
  return {std::max<int64_t>(0, -first), std::min<int64_t>(g.kernel, size - first)};
}

// ---- channels-last ---------------------------------------------------------------------------------------

// packed[(i * kernel + j) * C + c] = w[c, 0, off + i, off + j]
template <typename T>
std::vector<T> pack_taps(const T* w, const Geometry& g) {
  std::vector<T> packed(g.kernel * g.kernel * g.c);
  for (int64_t c = 0; c < g.c; ++c)
    for (int64_t i = 0; i < g.kernel; ++i)
      for (int64_t j = 0; j < g.kernel; ++j)
        packed[(i * g.kernel + j) * g.c + c] = w[c * g.full * g.full + (g.off + i) * g.full + g.off + j];
  return packed;
}

// dst[0:CB] = sum over taps (i, j) in [i0, i1) x [j0, j1) of src[i * di + j * dj + :] * taps[(i*k + j) * C + :].
// CB is a compile-time width (registers) or 0 for a run-time width `cb` (the channel tail).
template <typename T, int CB>
ONESHOT_INLINE void accumulate(const T* src, int64_t di, int64_t dj, const T* tap, int64_t k, int64_t c,
                               int64_t i0, int64_t i1, int64_t j0, int64_t j1, T* dst, int64_t cb) {
  const int64_t width = CB > 0 ? CB : cb;
  T acc[CB > 0 ? CB : 16] = {};
  for (int64_t i = i0; i < i1; ++i)
    for (int64_t j = j0; j < j1; ++j) {
      const T* s = src + i * di + j * dj;
      const T* t = tap + (i * k + j) * c;
      for (int64_t q = 0; q < width; ++q) acc[q] += s[q] * t[q];
    }
  for (int64_t q = 0; q < width; ++q) dst[q] = acc[q];
}

// All channels of one pixel: wide blocks, then 16, then the tail (run-time width).
template <typename T>
ONESHOT_INLINE void pixel(const T* src, int64_t di, int64_t dj, const T* tap, int64_t k, int64_t c,
                          int64_t i0, int64_t i1, int64_t j0, int64_t j1, T* dst) {
  constexpr int kWide = 64 / sizeof(T) * 4;  // four 512-bit registers
  int64_t q = 0;
  for (; q + kWide <= c; q += kWide)
    accumulate<T, kWide>(src + q, di, dj, tap + q, k, c, i0, i1, j0, j1, dst + q, 0);
  for (; q + 16 <= c; q += 16) accumulate<T, 16>(src + q, di, dj, tap + q, k, c, i0, i1, j0, j1, dst + q, 0);
  if (q < c) accumulate<T, 0>(src + q, di, dj, tap + q, k, c, i0, i1, j0, j1, dst + q, c - q);
}

// P output pixels with the same taps [i0, i1) x [j0, j1) (neighbours in a row, or one position in P images),
// one 512-bit block of channels at a time: each weight vector is loaded once for the P pixels, whose
// accumulators stay in registers. Pixel p reads src + p * dp and writes dst + p * dd.
template <typename T, int P>
ONESHOT_INLINE void tile(const T* src, int64_t di, int64_t dp, const T* tap, int64_t k, int64_t c, int64_t i0,
                         int64_t i1, int64_t j0, int64_t j1, T* dst, int64_t dd) {
  constexpr int V = 64 / sizeof(T);
  int64_t q = 0;
  for (; q + V <= c; q += V) {
    T acc[P][V] = {};
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) {
        const T* t = tap + (i * k + j) * c + q;
        const T* s = src + i * di + j * c + q;
#pragma GCC unroll 8
        for (int p = 0; p < P; ++p)
#pragma omp simd
          for (int v = 0; v < V; ++v) acc[p][v] += s[p * dp + v] * t[v];
      }
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p)
#pragma omp simd
      for (int v = 0; v < V; ++v) dst[p * dd + q + v] = acc[p][v];
  }
  if (q < c)
    for (int p = 0; p < P; ++p)
      accumulate<T, 0>(src + p * dp + q, di, c, tap + q, k, c, i0, i1, j0, j1, dst + p * dd + q, c - q);
}

// One output row of a "same"-padded depthwise correlation over an NHWC image of `cols` columns:
//   dst[o, :] = sum_{i in [i0, i1), j} origin[i * cols * C + (o * stride - pad + j) * C + :] * tap[i * k + j, :]
// where `origin` points at column 0 of the (possibly virtual) input row of tap i = 0.
template <typename T>
ONESHOT_INLINE void conv_row(const T* origin, int64_t cols, int64_t out_cols, int64_t c, int64_t k,
                             int64_t stride, int64_t pad, int64_t i0, int64_t i1, const T* tap, T* dst) {
  const int64_t di = cols * c, dp = stride * c;
  // Interior columns [lo, hi): o * stride - pad >= 0 and o * stride - pad + k <= cols.
  const int64_t lo = std::min(out_cols, (pad + stride - 1) / stride);
  const int64_t hi = cols - k + pad >= 0 ? std::max(lo, std::min(out_cols, (cols - k + pad) / stride + 1)) : lo;
  auto edge = [&](int64_t o) {
    const int64_t first = o * stride - pad;
    const int64_t j0 = std::max<int64_t>(0, -first), j1 = std::min<int64_t>(k, cols - first);
    pixel(origin + first * c, di, c, tap, k, c, i0, i1, j0, j1, dst + o * c);
  };
  for (int64_t o = 0; o < lo; ++o) edge(o);
  int64_t o = lo;
  for (; o + 8 <= hi; o += 8)
    tile<T, 8>(origin + (o * stride - pad) * c, di, dp, tap, k, c, i0, i1, 0, k, dst + o * c, c);
  for (; o + 4 <= hi; o += 4)
    tile<T, 4>(origin + (o * stride - pad) * c, di, dp, tap, k, c, i0, i1, 0, k, dst + o * c, c);
  for (; o < hi; ++o) tile<T, 1>(origin + (o * stride - pad) * c, di, dp, tap, k, c, i0, i1, 0, k, dst + o * c, c);
  for (; o < out_cols; ++o) edge(o);
}

// Forward, output rows [begin, end) of the flattened (n, oh).
template <typename T>
ONESHOT_INLINE void forward_nhwc_rows(const Geometry& g, const T* x, const T* tap, T* out, int64_t begin,
                                      int64_t end) {
  for (int64_t row = begin; row < end; ++row) {
    const int64_t n = row / g.ho, oh = row % g.ho;
    const auto [i0, i1] = taps(oh, g, g.h);
    const T* origin = x + (n * g.h + oh * g.stride - g.pad) * g.w * g.c;
    conv_row(origin, g.w, g.wo, g.c, g.kernel, g.stride, g.pad, i0, i1, tap, out + row * g.wo * g.c);
  }
}

// Forward for narrow images in blocks of kBatchTile images: tasks [begin, end) of the flattened
// (image block, oh). Every output position, edges included, is one register tile across the block's images,
// which share its taps; a row of a narrow image leaves too few interior columns for row tiles.
constexpr int kBatchTile = 8;

template <typename T>
ONESHOT_INLINE void forward_nhwc_batch_rows(const Geometry& g, const T* x, const T* tap, T* out, int64_t begin,
                                            int64_t end) {
  const int64_t image = g.h * g.w * g.c, out_image = g.ho * g.wo * g.c;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / g.ho * kBatchTile, oh = task % g.ho;
    const auto [i0, i1] = taps(oh, g, g.h);
    for (int64_t ow = 0; ow < g.wo; ++ow) {
      const auto [j0, j1] = taps(ow, g, g.w);
      const T* origin = x + ((n * g.h + oh * g.stride - g.pad) * g.w + ow * g.stride - g.pad) * g.c;
      tile<T, kBatchTile>(origin, g.w * g.c, image, tap, g.kernel, g.c, i0, i1, j0, j1,
                          out + ((n * g.ho + oh) * g.wo + ow) * g.c, out_image);
    }
  }
}

// Gradient of x, input rows [begin, end) of the flattened (n, ih): a gather, so no two tasks write one value.
// Stride 1 is the forward with the kernel flipped; other strides gather the taps that hit each input pixel.
template <typename T>
ONESHOT_INLINE void grad_input_nhwc_rows(const Geometry& g, const T* grad, const T* flipped, const T* tap,
                                         T* gx, int64_t begin, int64_t end) {
  for (int64_t row = begin; row < end; ++row) {
    const int64_t n = row / g.h, ih = row % g.h;
    T* dst_row = gx + row * g.w * g.c;
    if (g.stride == 1) {
      // gx[ih, iw] = sum_{i,j} grad[ih - pad + i, iw - pad + j] * w[k-1-i, k-1-j]; grad is ho x wo = h x w.
      const auto [i0, i1] = taps(ih, g, g.ho);
      const T* origin = grad + (n * g.ho + ih - g.pad) * g.wo * g.c;
      conv_row(origin, g.wo, g.w, g.c, g.kernel, 1, g.pad, i0, i1, flipped, dst_row);
      continue;
    }
    for (int64_t iw = 0; iw < g.w; ++iw) {
      T* dst = dst_row + iw * g.c;
      std::fill(dst, dst + g.c, T(0));
      for (int64_t i = (ih + g.pad) % g.stride; i < g.kernel; i += g.stride) {
        const int64_t oh = (ih + g.pad - i) / g.stride;
        if (oh < 0 || oh >= g.ho) continue;
        for (int64_t j = (iw + g.pad) % g.stride; j < g.kernel; j += g.stride) {
          const int64_t ow = (iw + g.pad - j) / g.stride;
          if (ow < 0 || ow >= g.wo) continue;
          const T* s = grad + ((n * g.ho + oh) * g.wo + ow) * g.c;
          const T* t = tap + (i * g.kernel + j) * g.c;
#pragma omp simd
          for (int64_t q = 0; q < g.c; ++q) dst[q] += s[q] * t[q];
        }
      }
    }
  }
}

// Gradient of the taps, summed over output rows [begin, end) of the flattened (n, oh) into acc[tap][c].
template <typename T>
ONESHOT_INLINE void grad_taps_nhwc_rows(const Geometry& g, const T* grad, const T* x, T* acc, int64_t begin,
                                        int64_t end) {
  constexpr int kBlock = 64 / sizeof(T) * 2;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t n = row / g.ho, oh = row % g.ho;
    const auto [i0, i1] = taps(oh, g, g.h);
    const T* grow = grad + row * g.wo * g.c;
    for (int64_t i = i0; i < i1; ++i) {
      const T* xrow = x + (n * g.h + oh * g.stride - g.pad + i) * g.w * g.c;
      for (int64_t j = 0; j < g.kernel; ++j) {
        const auto [lo, hi] = columns(g, j);
        T* a = acc + (i * g.kernel + j) * g.c;
        for (int64_t q0 = 0; q0 < g.c; q0 += kBlock) {
          const int64_t width = std::min<int64_t>(kBlock, g.c - q0);
          T part[kBlock] = {};
          for (int64_t ow = lo; ow < hi; ++ow) {
            const T* gp = grow + ow * g.c + q0;
            const T* xp = xrow + (ow * g.stride - g.pad + j) * g.c + q0;
            if (width == kBlock) {
              for (int q = 0; q < kBlock; ++q) part[q] += gp[q] * xp[q];
            } else {
              for (int64_t q = 0; q < width; ++q) part[q] += gp[q] * xp[q];
            }
          }
          for (int64_t q = 0; q < width; ++q) a[q0 + q] += part[q];
        }
      }
    }
  }
}

// Each loop is compiled once per instruction set; Loops<T> holds the variants this CPU runs best.
template <typename T>
struct Loops {
  void (*forward_nhwc)(const Geometry&, const T*, const T*, T*, int64_t, int64_t);
  void (*forward_nhwc_batch)(const Geometry&, const T*, const T*, T*, int64_t, int64_t);
  void (*grad_input_nhwc)(const Geometry&, const T*, const T*, const T*, T*, int64_t, int64_t);
  void (*grad_taps_nhwc)(const Geometry&, const T*, const T*, T*, int64_t, int64_t);
};

#define ONESHOT_VARIANT(ATTR, T, NAME)                                                                         \
  ATTR void forward_nhwc_##NAME(const Geometry& g, const T* x, const T* tap, T* out, int64_t b, int64_t e) {   \
    forward_nhwc_rows<T>(g, x, tap, out, b, e);                                                                \
  }                                                                                                            \
  ATTR void forward_nhwc_batch_##NAME(const Geometry& g, const T* x, const T* tap, T* out, int64_t b,          \
                                      int64_t e) {                                                             \
    forward_nhwc_batch_rows<T>(g, x, tap, out, b, e);                                                          \
  }                                                                                                            \
  ATTR void grad_input_nhwc_##NAME(const Geometry& g, const T* grad, const T* flipped, const T* tap, T* gx,    \
                                   int64_t b, int64_t e) {                                                     \
    grad_input_nhwc_rows<T>(g, grad, flipped, tap, gx, b, e);                                                  \
  }                                                                                                            \
  ATTR void grad_taps_nhwc_##NAME(const Geometry& g, const T* grad, const T* x, T* acc, int64_t b, int64_t e) { \
    grad_taps_nhwc_rows<T>(g, grad, x, acc, b, e);                                                             \
  }                                                                                                            \
  const Loops<T> loops_##NAME{forward_nhwc_##NAME, forward_nhwc_batch_##NAME, grad_input_nhwc_##NAME,         \
                              grad_taps_nhwc_##NAME};

ONESHOT_VARIANT(, float, f32_base)
ONESHOT_VARIANT(, double, f64_base)
#ifdef ONESHOT_X86
ONESHOT_VARIANT(ONESHOT_AVX2, float, f32_avx2)
ONESHOT_VARIANT(ONESHOT_AVX2, double, f64_avx2)
ONESHOT_VARIANT(ONESHOT_AVX512, float, f32_avx512)
ONESHOT_VARIANT(ONESHOT_AVX512, double, f64_avx512)
#endif
#undef ONESHOT_VARIANT

enum class Isa { kBase, kAvx2, kAvx512 };

Isa detect_isa() {
#ifdef ONESHOT_X86
  __builtin_cpu_init();
  const bool fma = __builtin_cpu_supports("fma");
  if (fma && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) return Isa::kAvx512;
  if (fma && __builtin_cpu_supports("avx2")) return Isa::kAvx2;
#endif
  return Isa::kBase;
}

template <typename T>
const Loops<T>& loops();

#ifdef ONESHOT_X86
#define ONESHOT_PICK(T, S)                                                              \
  template <>                                                                           \
  const Loops<T>& loops<T>() {                                                          \
    static const Isa isa = detect_isa();                                                \
    return isa == Isa::kAvx512 ? loops_##S##_avx512 : isa == Isa::kAvx2 ? loops_##S##_avx2 : loops_##S##_base; \
  }
#else
#define ONESHOT_PICK(T, S)                   \
  template <>                                \
  const Loops<T>& loops<T>() {               \
    return loops_##S##_base;                 \
  }
#endif
ONESHOT_PICK(float, f32)
ONESHOT_PICK(double, f64)
#undef ONESHOT_PICK

// Image blocks that take batch tiles: narrow images only (wide rows have enough interior columns for row tiles).
int64_t batch_blocks(const Geometry& g) { return g.wo < 16 ? g.n / kBatchTile : 0; }

// Rows per task: enough work per task to pay for the scheduling, at least one row.
int64_t grain(int64_t work_per_item) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, work_per_item)); }

}  // namespace

at::Tensor elastic_dwconv_cpu(const at::Tensor& x_in, const at::Tensor& weight_in, int64_t kernel, int64_t stride) {
  const Geometry g = check(x_in, weight_in, kernel, stride);
  check_cpu_dtype(x_in);
  const auto x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const auto weight = weight_in.contiguous();
  auto out = at::empty({g.n, g.c, g.ho, g.wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (out.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "elastic_dwconv_cpu", [&] {
      const Loops<scalar_t>& loop = loops<scalar_t>();
      const auto tap = pack_taps(weight.data_ptr<scalar_t>(), g);
      const scalar_t* xp = x.data_ptr<scalar_t>();
      scalar_t* op = out.data_ptr<scalar_t>();
      const int64_t blocks = batch_blocks(g);
      const int64_t work = g.wo * g.c * g.kernel * g.kernel;
      at::parallel_for(0, blocks * g.ho, grain(work * kBatchTile), [&](int64_t b, int64_t e) {
        loop.forward_nhwc_batch(g, xp, tap.data(), op, b, e);
      });
      at::parallel_for(blocks * kBatchTile * g.ho, g.n * g.ho, grain(work), [&](int64_t b, int64_t e) {
        loop.forward_nhwc(g, xp, tap.data(), op, b, e);
      });
    });
  }
  return out.contiguous(output_format(x_in));
}

std::tuple<at::Tensor, at::Tensor> elastic_dwconv_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                               const at::Tensor& weight_in, int64_t kernel,
                                                               int64_t stride) {
  const Geometry g = check(x_in, weight_in, kernel, stride);
  check_cpu_dtype(x_in);
  TORCH_CHECK(grad_in.sizes() == at::IntArrayRef({g.n, g.c, g.ho, g.wo}),
              "elastic_dwconv_backward: grad has the wrong shape");
  TORCH_CHECK(grad_in.scalar_type() == x_in.scalar_type(), "elastic_dwconv_backward: grad and x dtypes differ");
  const auto grad = grad_in.contiguous(at::MemoryFormat::ChannelsLast);
  const auto x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const auto weight = weight_in.contiguous();
  auto grad_x = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
  auto grad_w = at::zeros_like(weight);
  if (grad.numel() == 0) return {grad_x.zero_().contiguous(output_format(x_in)), grad_w};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "elastic_dwconv_backward_cpu", [&] {
    const Loops<scalar_t>& loop = loops<scalar_t>();
    const scalar_t* gp = grad.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.data_ptr<scalar_t>();
    scalar_t* gwp = grad_w.data_ptr<scalar_t>();
    const auto tap = pack_taps(weight.data_ptr<scalar_t>(), g);
    const int64_t taps_n = g.kernel * g.kernel;
    std::vector<scalar_t> flipped(tap.size());
    for (int64_t t = 0; t < taps_n; ++t)
      std::copy(tap.begin() + t * g.c, tap.begin() + (t + 1) * g.c, flipped.begin() + (taps_n - 1 - t) * g.c);
    // Stride 1: grad_x is the forward of grad with the flipped kernel (same sizes), so it takes batch tiles too.
    const int64_t blocks = g.stride == 1 ? batch_blocks(g) : 0;
    at::parallel_for(0, blocks * g.h, grain(g.w * g.c * taps_n * kBatchTile), [&](int64_t b, int64_t e) {
      loop.forward_nhwc_batch(g, gp, flipped.data(), gxp, b, e);
    });
    at::parallel_for(blocks * kBatchTile * g.h, g.n * g.h, grain(g.w * g.c * taps_n), [&](int64_t b, int64_t e) {
      loop.grad_input_nhwc(g, gp, flipped.data(), tap.data(), gxp, b, e);
    });
    // Weight: each task sums its share of the rows into its own [tap][c] buffer; buffers are added in a
    // fixed order afterwards, so the result does not depend on scheduling.
    const int64_t rows = g.n * g.ho;
    const int64_t tasks = std::min<int64_t>(rows, at::get_num_threads());
    std::vector<scalar_t> partial(tasks * taps_n * g.c, scalar_t(0));
    at::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        loop.grad_taps_nhwc(g, gp, xp, partial.data() + t * taps_n * g.c, rows * t / tasks,
                            rows * (t + 1) / tasks);
    });
    for (int64_t t = 0; t < tasks; ++t) {
      const scalar_t* part = partial.data() + t * taps_n * g.c;
      for (int64_t c = 0; c < g.c; ++c)
        for (int64_t i = 0; i < g.kernel; ++i)
          for (int64_t j = 0; j < g.kernel; ++j)
            gwp[c * g.full * g.full + (g.off + i) * g.full + g.off + j] += part[(i * g.kernel + j) * g.c + c];
    }
  });
  return {grad_x.contiguous(output_format(x_in)), grad_w};
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
