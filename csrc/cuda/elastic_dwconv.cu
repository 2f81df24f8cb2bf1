// elastic_dwconv, CUDA kernels. The schemas, the semantics and the CPU kernels live in csrc/elastic_dwconv.cpp;
// this file registers only the CUDA key.
//
//   out[n, c, oh, ow] = sum_{i,j < kernel} x[n, c, oh*stride - pad + i, ow*stride - pad + j] * w[c, 0, off+i, off+j]
//
// Layouts: a channels-last x (NHWC in memory) runs NHWC kernels, in which neighbouring threads take neighbouring
// channels so global accesses coalesce, and its outputs are channels-last too; any other x is made contiguous
// and runs the NCHW kernels. The weight is read (and its gradient written) through its strides, so no sliced or
// contiguous copy of it is made. Half types accumulate in float (at::opmath_type).
//
// Backward: grad_x gathers (one thread per input element sums the outputs it fed, so no atomics); grad_w is a
// block reduction over (n, oh, ow) per (c, i, j), in acc_t, split over a few blocks whose partial sums a second
// kernel adds in a fixed order (deterministic, no atomics); entries outside the centre window or beyond the C
// channels used stay zero.
#include "../elastic_dwconv.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

namespace oneshot {
namespace {

constexpr int kThreads = 256;

using dwconv::Geometry;

// The weight's strides (dims 0, 2, 3), so it is read in place whatever its layout.
struct WeightStrides {
  int64_t c, i, j;
};

Geometry check(const at::Tensor& x, const at::Tensor& weight, int64_t kernel, int64_t stride) {
  const Geometry g = dwconv::check(x, weight, kernel, stride);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble || x.scalar_type() == at::kHalf ||
                  x.scalar_type() == at::kBFloat16,
              "elastic_dwconv: the CUDA kernel takes float32, float64, float16 or bfloat16");
  TORCH_CHECK(x.is_cuda(), "elastic_dwconv: the CUDA kernel got x on ", x.device());
  return g;
}

// NHWC only when x is channels-last and not also plain contiguous (C == 1 or H * W == 1 are both; the NCHW
// kernels serve those, and the outputs' strides then agree with channels-last where it matters).
bool use_channels_last(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

WeightStrides strides_of(const at::Tensor& weight) { return {weight.stride(0), weight.stride(2), weight.stride(3)}; }

// Grid-stride loops below, so the grid may be capped.
unsigned int blocks_for(int64_t total) {
  return static_cast<unsigned int>(std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t{1} << 20));
}

// ------------------------------------------------------------------------------------- element addressing

// One element of an [N, C, rows, cols] tensor stored NCHW or NHWC (kNhwc): its coordinates from its flat index in
// memory order, so that neighbouring threads touch neighbouring memory in both layouts.
struct Element {
  int64_t n, c, r, q;
};

template <bool kNhwc>
__device__ __forceinline__ Element split(int64_t idx, int64_t channels, int64_t rows, int64_t cols) {
  if (kNhwc) return {idx / (channels * cols * rows), idx % channels, (idx / (channels * cols)) % rows, (idx / channels) % cols};
  return {idx / (cols * rows * channels), (idx / (cols * rows)) % channels, (idx / cols) % rows, idx % cols};
}

// Offset of position (0, 0) of channel c of image n, and the step between neighbouring positions of a channel.
template <bool kNhwc>
__device__ __forceinline__ int64_t plane_origin(int64_t n, int64_t c, int64_t channels, int64_t rows, int64_t cols) {
  return kNhwc ? n * rows * cols * channels + c : (n * channels + c) * rows * cols;
}

template <bool kNhwc>
__device__ __forceinline__ int64_t position_step(int64_t channels) {
  return kNhwc ? channels : 1;
}

// ---------------------------------------------------------------------------------------------------- forward

// One thread per output element, in the output's memory order.
template <typename scalar_t, bool kNhwc>
__global__ void forward(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w, scalar_t* __restrict__ out,
                        Geometry g, WeightStrides ws, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t step = position_step<kNhwc>(g.c);
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{blockDim.x} * gridDim.x) {
    const Element e = split<kNhwc>(idx, g.c, g.ho, g.wo);
    const scalar_t* xin = x + plane_origin<kNhwc>(e.n, e.c, g.c, g.h, g.w);
    const scalar_t* wk = w + e.c * ws.c + g.off * ws.i + g.off * ws.j;
    const int64_t ih0 = e.r * g.stride - g.pad;
    const int64_t iw0 = e.q * g.stride - g.pad;
    acc_t acc = 0;
    for (int64_t i = 0; i < g.kernel; ++i) {
      const int64_t ih = ih0 + i;
      if (ih < 0 || ih >= g.h) continue;
      for (int64_t j = 0; j < g.kernel; ++j) {
        const int64_t iw = iw0 + j;
        if (iw < 0 || iw >= g.w) continue;
        acc += static_cast<acc_t>(xin[(ih * g.w + iw) * step]) * static_cast<acc_t>(wk[i * ws.i + j * ws.j]);
      }
    }
    out[idx] = static_cast<scalar_t>(acc);
  }
}

// ------------------------------------------------------------------------------------------------ grad of x

// Output index o along one axis that input index `in` fed through tap `t`: in = o * stride - pad + t.
// Returns -1 when there is none (not on the stride grid, or outside [0, size)).
__device__ __forceinline__ int64_t source(int64_t in, int64_t t, int64_t pad, int64_t stride, int64_t size) {
  const int64_t num = in + pad - t;
  if (num < 0 || num % stride != 0) return -1;
  const int64_t o = num / stride;
  return o < size ? o : -1;
}

// One thread per input element, in memory order; it sums grad * w over the outputs it fed.
template <typename scalar_t, bool kNhwc>
__global__ void grad_x_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ w,
                              scalar_t* __restrict__ grad_x, Geometry g, WeightStrides ws, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t step = position_step<kNhwc>(g.c);
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{blockDim.x} * gridDim.x) {
    const Element e = split<kNhwc>(idx, g.c, g.h, g.w);
    const scalar_t* go = grad + plane_origin<kNhwc>(e.n, e.c, g.c, g.ho, g.wo);
    const scalar_t* wk = w + e.c * ws.c + g.off * ws.i + g.off * ws.j;
    acc_t acc = 0;
    for (int64_t i = 0; i < g.kernel; ++i) {
      const int64_t oh = source(e.r, i, g.pad, g.stride, g.ho);
      if (oh < 0) continue;
      for (int64_t j = 0; j < g.kernel; ++j) {
        const int64_t ow = source(e.q, j, g.pad, g.stride, g.wo);
        if (ow < 0) continue;
        acc += static_cast<acc_t>(go[(oh * g.wo + ow) * step]) * static_cast<acc_t>(wk[i * ws.i + j * ws.j]);
      }
    }
    grad_x[idx] = static_cast<scalar_t>(acc);
  }
}

// ------------------------------------------------------------------------------------------- grad of weight
//
// grad_w[c, off+i, off+j] = sum over (n, oh, ow) of grad[n, c, oh, ow] * x[n, c, oh*stride - pad + i, ...]. The
// positions p = (n * Ho + oh) * Wo + ow are cut into `splits` chunks (blockIdx.y) so that small C * kernel^2
// still fills the GPU; each block reduces its chunk for its (c, tap) in shared memory and writes one partial sum
// (in acc_t) to partial[split, c, tap]; finish_grad_w then adds the splits in a fixed order. No atomics, so the
// result is deterministic.

// The positions [begin, end) one block (blockIdx.y of gridDim.y splits) reduces; its threads stride over them.
struct Chunk {
  int64_t begin, end;
};

__device__ __forceinline__ Chunk chunk_of(int64_t total, int64_t splits) {
  const int64_t size = (total + splits - 1) / splits;
  const int64_t begin = blockIdx.y * size;
  return {begin, begin + size < total ? begin + size : total};
}

// NCHW: one block of kThreads threads per (c, tap, split): blockIdx.x = c * kernel^2 + tap, tap = i * kernel + j.
template <typename scalar_t>
__global__ void grad_w_nchw(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x,
                            at::opmath_type<scalar_t>* __restrict__ partial, Geometry g) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t sums[kThreads];
  const int64_t taps = g.kernel * g.kernel;
  const int64_t tap = blockIdx.x % taps;
  const int64_t c = blockIdx.x / taps;
  const int64_t i = tap / g.kernel;
  const int64_t j = tap % g.kernel;
  const int64_t per_plane = g.ho * g.wo;
  const Chunk chunk = chunk_of(g.n * per_plane, gridDim.y);
  acc_t acc = 0;
  for (int64_t p = chunk.begin + threadIdx.x; p < chunk.end; p += blockDim.x) {
    const int64_t ow = p % g.wo;
    const int64_t oh = (p / g.wo) % g.ho;
    const int64_t n = p / per_plane;
    const int64_t ih = oh * g.stride - g.pad + i;
    const int64_t iw = ow * g.stride - g.pad + j;
    if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
    const int64_t plane = n * g.c + c;
    acc += static_cast<acc_t>(grad[plane * per_plane + oh * g.wo + ow]) *
           static_cast<acc_t>(x[(plane * g.h + ih) * g.w + iw]);
  }
  sums[threadIdx.x] = acc;
  __syncthreads();
  for (unsigned int span = blockDim.x / 2; span > 0; span /= 2) {  // blockDim.x is a power of two
    if (threadIdx.x < span) sums[threadIdx.x] += sums[threadIdx.x + span];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[(blockIdx.y * g.c + c) * taps + tap] = sums[0];
}

// NHWC: a block is kTileC adjacent channels (threadIdx.x, so loads coalesce) by kRows position lanes
// (threadIdx.y) for one tap and split: blockIdx.x = tap * channel_tiles + tile. Each column reduces its channel.
constexpr int kTileC = 32;
constexpr int kRows = kThreads / kTileC;

template <typename scalar_t>
__global__ void grad_w_nhwc(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x,
                            at::opmath_type<scalar_t>* __restrict__ partial, Geometry g, int64_t channel_tiles) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t sums[kRows][kTileC];
  const int64_t taps = g.kernel * g.kernel;
  const int64_t tap = blockIdx.x / channel_tiles;
  const int64_t c = (blockIdx.x % channel_tiles) * kTileC + threadIdx.x;
  const int64_t i = tap / g.kernel;
  const int64_t j = tap % g.kernel;
  const Chunk chunk = chunk_of(g.n * g.ho * g.wo, gridDim.y);
  acc_t acc = 0;
  if (c < g.c) {
    for (int64_t p = chunk.begin + threadIdx.y; p < chunk.end; p += blockDim.y) {
      const int64_t ow = p % g.wo;
      const int64_t oh = (p / g.wo) % g.ho;
      const int64_t n = p / (g.wo * g.ho);
      const int64_t ih = oh * g.stride - g.pad + i;
      const int64_t iw = ow * g.stride - g.pad + j;
      if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
      acc += static_cast<acc_t>(grad[p * g.c + c]) *
             static_cast<acc_t>(x[((n * g.h + ih) * g.w + iw) * g.c + c]);
    }
  }
  sums[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  for (unsigned int span = blockDim.y / 2; span > 0; span /= 2) {  // blockDim.y is a power of two
    if (threadIdx.y < span) sums[threadIdx.y][threadIdx.x] += sums[threadIdx.y + span][threadIdx.x];
    __syncthreads();
  }
  if (threadIdx.y == 0 && c < g.c) partial[(blockIdx.y * g.c + c) * taps + tap] = sums[0][threadIdx.x];
}

// One thread per (c, tap): adds the splits' partial sums in order and writes the weight gradient entry.
template <typename scalar_t>
__global__ void finish_grad_w(const at::opmath_type<scalar_t>* __restrict__ partial, scalar_t* __restrict__ grad_w,
                              Geometry g, WeightStrides gs, int64_t splits) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t taps = g.kernel * g.kernel;
  const int64_t total = g.c * taps;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{blockDim.x} * gridDim.x) {
    const int64_t c = idx / taps;
    const int64_t tap = idx % taps;
    acc_t acc = 0;
    for (int64_t s = 0; s < splits; ++s) acc += partial[s * total + idx];
    grad_w[c * gs.c + (g.off + tap / g.kernel) * gs.i + (g.off + tap % g.kernel) * gs.j] = static_cast<scalar_t>(acc);
  }
}

// How many chunks to cut the positions into: enough blocks for a few waves over the SMs, but at least ~4
// positions per lane, and within gridDim.y's limit.
int64_t choose_splits(int64_t base_blocks, int64_t positions, int64_t lanes) {
  const int64_t target = 4 * int64_t{at::cuda::getCurrentDeviceProperties()->multiProcessorCount};
  int64_t splits = (target + base_blocks - 1) / base_blocks;
  splits = std::min(splits, (positions + 4 * lanes - 1) / (4 * lanes));
  return std::clamp<int64_t>(splits, 1, 65535);
}

}  // namespace

at::Tensor elastic_dwconv_cuda(const at::Tensor& x_in, const at::Tensor& weight, int64_t kernel, int64_t stride) {
  const Geometry g = check(x_in, weight, kernel, stride);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool nhwc = use_channels_last(x_in);
  const auto format = nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const auto x = x_in.contiguous(format);
  auto out = at::empty({g.n, g.c, g.ho, g.wo}, x.options().memory_format(format));
  const int64_t total = out.numel();
  if (total == 0) return out;
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "elastic_dwconv_cuda", [&] {
    const auto* xp = x.const_data_ptr<scalar_t>();
    const auto* wp = weight.const_data_ptr<scalar_t>();
    auto* op = out.mutable_data_ptr<scalar_t>();
    auto* kernel_fn = nhwc ? forward<scalar_t, true> : forward<scalar_t, false>;
    kernel_fn<<<blocks_for(total), kThreads, 0, stream>>>(xp, wp, op, g, strides_of(weight), total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> elastic_dwconv_backward_cuda(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                                const at::Tensor& weight, int64_t kernel,
                                                                int64_t stride) {
  const Geometry g = check(x_in, weight, kernel, stride);
  TORCH_CHECK(grad_in.sizes() == at::IntArrayRef({g.n, g.c, g.ho, g.wo}),
              "elastic_dwconv_backward: grad has the wrong shape");
  TORCH_CHECK(grad_in.device() == x_in.device() && grad_in.scalar_type() == x_in.scalar_type(),
              "elastic_dwconv_backward: grad must have x's device and dtype");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool nhwc = use_channels_last(x_in);
  const auto format = nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const auto x = x_in.contiguous(format);
  const auto grad = grad_in.contiguous(format);
  auto grad_x = at::empty(x.sizes(), x.options().memory_format(format));
  auto grad_w = at::zeros_like(weight);  // keeps a dense weight's strides; written through them
  if (grad.numel() == 0) return {grad_x.zero_(), grad_w};
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "elastic_dwconv_backward_cuda", [&] {
    const auto* gp = grad.const_data_ptr<scalar_t>();
    const auto* xp = x.const_data_ptr<scalar_t>();
    const auto* wp = weight.const_data_ptr<scalar_t>();
    auto* gxp = grad_x.mutable_data_ptr<scalar_t>();
    auto* gwp = grad_w.mutable_data_ptr<scalar_t>();
    const int64_t total_x = grad_x.numel();
    if (total_x > 0) {
      auto* kernel_fn = nhwc ? grad_x_kernel<scalar_t, true> : grad_x_kernel<scalar_t, false>;
      kernel_fn<<<blocks_for(total_x), kThreads, 0, stream>>>(gp, wp, gxp, g, strides_of(weight), total_x);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    // grad_w: partial sums per split, then one ordered sum per (c, tap).
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t taps = g.kernel * g.kernel;
    const int64_t positions = g.n * g.ho * g.wo;
    const int64_t tiles = (g.c + kTileC - 1) / kTileC;
    const int64_t base_blocks = nhwc ? taps * tiles : taps * g.c;
    TORCH_CHECK(base_blocks <= int64_t{0x7fffffff}, "elastic_dwconv_backward: too many channels");
    const int64_t splits = choose_splits(base_blocks, positions, nhwc ? kRows : kThreads);
    auto partial = at::empty({splits, g.c, taps}, x.options().dtype(at::toOpMathType(x.scalar_type())));
    auto* pp = partial.mutable_data_ptr<acc_t>();
    const dim3 grid(static_cast<unsigned int>(base_blocks), static_cast<unsigned int>(splits));
    if (nhwc) {
      grad_w_nhwc<scalar_t><<<grid, dim3(kTileC, kRows), 0, stream>>>(gp, xp, pp, g, tiles);
    } else {
      grad_w_nchw<scalar_t><<<grid, kThreads, 0, stream>>>(gp, xp, pp, g);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    finish_grad_w<scalar_t><<<blocks_for(g.c * taps), kThreads, 0, stream>>>(pp, gwp, g, strides_of(grad_w), splits);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_x, grad_w};
}

TORCH_LIBRARY_IMPL(oneshot, CUDA, m) {
  m.impl("elastic_dwconv", &elastic_dwconv_cuda);
  m.impl("elastic_dwconv_backward", &elastic_dwconv_backward_cuda);
}

}  // namespace oneshot
