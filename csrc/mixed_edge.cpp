// mixed_edge: one NAS-Bench-201 edge with all five candidate ops mixed by architecture weights (DARTS):
//
//   out = w0 * (x * 0) + w1 * x + w2 * BN1(conv1x1(relu x)) + w3 * BN3(conv3x3(relu x)) + w4 * avgpool3x3(x)
//
// (avg pooling: stride 1, padding 1, padding not counted; each BN its own, batch statistics in training,
// running ones in eval). Op by op this is a dozen passes over memory plus torch's NCHW average pooling,
// which alone costs more than both convolutions. Here one ReLU feeds both convolutions (torch's: oneDNN for
// the 3x3, one batched GEMM for the 1x1), the BN statistics are one reduction pass, and normalise + weighted
// sum + skip + pooling are one pass per (image, channel) plane. The backward (a separate op) is a reduction
// pass (all BN and architecture-weight sums, the pooling recomputed on the fly), one pass for the gradients of
// the two convolution outputs, torch's convolution backward, and one pass that adds every branch's gradient
// for x (ReLU mask, skip, pooling's transposed box sum).
//
// The forward op is functional: it returns the batch mean and (biased) variance of both convolution outputs,
// and oneshot::mixed_edge_update_stats moves the running statistics as nn.BatchNorm2d does. Autograd and fake
// kernels are registered from Python (supernet/kernels.py), whose mixed_edge_reference is the test oracle.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <tuple>
#include <vector>

namespace oneshot {
namespace {

constexpr int64_t kOps = 5;  // none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3

void check_args(const at::Tensor& x, const at::Tensor& weights, const at::Tensor& conv1, const at::Tensor& conv3,
                std::initializer_list<const at::Tensor*> per_channel) {
  TORCH_CHECK_VALUE(x.dim() == 4, "mixed_edge: x must be 4-D [N, C, H, W], got ", x.dim(), "-D");
  TORCH_CHECK_VALUE(x.device().is_cpu(), "mixed_edge: the C++ kernel runs on CPU tensors only");
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                    "mixed_edge: x must be float32 or float64, got ", x.scalar_type());
  const int64_t c = x.size(1);
  TORCH_CHECK_VALUE(weights.dim() == 1 && weights.size(0) == kOps,
                    "mixed_edge: weights must be 1-D with one entry per op (5), got shape ", weights.sizes());
  TORCH_CHECK_VALUE(conv1.sizes() == at::IntArrayRef({c, c, 1, 1}), "mixed_edge: conv1 must be [", c, ", ", c,
                    ", 1, 1] for x of ", c, " channels, got ", conv1.sizes());
  TORCH_CHECK_VALUE(conv3.sizes() == at::IntArrayRef({c, c, 3, 3}), "mixed_edge: conv3 must be [", c, ", ", c,
                    ", 3, 3] for x of ", c, " channels, got ", conv3.sizes());
  for (const at::Tensor* t : per_channel)
    TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == c, "mixed_edge: every batch-norm parameter and statistic "
                      "must be 1-D of ", c, " channels, got shape ", t->sizes());
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&weights, &conv1, &conv3})
    TORCH_CHECK_VALUE(t->scalar_type() == x.scalar_type() && t->device() == x.device(),
                      "mixed_edge: every tensor must share x's dtype and device");
  for (const at::Tensor* t : per_channel)
    TORCH_CHECK_VALUE(t->scalar_type() == x.scalar_type() && t->device() == x.device(),
                      "mixed_edge: every tensor must share x's dtype and device");
}

// The reciprocal of the number of in-bounds taps of the 3x3 window at every position of an h x w plane:
// avg_pool2d's divisor when padding is not counted.
template <typename T>
std::vector<T> inverse_counts(int64_t h, int64_t w) {
  std::vector<T> inv(h * w);
  auto taps = [](int64_t i, int64_t n) { return std::min<int64_t>(i + 1, n - 1) - std::max<int64_t>(i - 1, 0) + 1; };
  for (int64_t i = 0; i < h; ++i)
    for (int64_t j = 0; j < w; ++j) inv[i * w + j] = T(1) / static_cast<T>(taps(i, h) * taps(j, w));
  return inv;
}

// The 3x3 box sum (zero padding) of an h x w plane into out, in flat loops over the plane: the column sums
// of three rows into v[1, hw] (v has hw + 2 entries, the two ends zero), then three shifted adds, then the
// first and last column of every row again without the neighbour that wrapped around from the next / previous
// row.
template <typename T>
void box_sum(const T* x, int64_t h, int64_t w, T* v, T* out) {
  const int64_t hw = h * w;
  T* col = v + 1;
  if (h == 1) {
    std::copy(x, x + w, col);
  } else {
#pragma omp simd
    for (int64_t k = 0; k < w; ++k) col[k] = x[k] + x[k + w];
#pragma omp simd
    for (int64_t k = w; k < hw - w; ++k) col[k] = x[k - w] + x[k] + x[k + w];
#pragma omp simd
    for (int64_t k = hw - w; k < hw; ++k) col[k] = x[k - w] + x[k];
  }
#pragma omp simd
  for (int64_t k = 0; k < hw; ++k) out[k] = v[k] + v[k + 1] + v[k + 2];
  for (int64_t k = 0; k < hw; k += w) {
    out[k] = w > 1 ? col[k] + col[k + 1] : col[k];
    if (w > 1) out[k + w - 1] = col[k + w - 2] + col[k + w - 1];
  }
}

// Per-plane shifted sums of y (shift: the channel's first value, for a stable variance), combined per channel
// in a fixed order, so the result does not depend on the thread count.
template <typename T>
void channel_moments(const at::Tensor& y, at::Tensor& mean, at::Tensor& var) {
  const int64_t n = y.size(0), c = y.size(1), hw = y.size(2) * y.size(3);
  const T* py = y.data_ptr<T>();
  std::vector<double> partial(2 * n * c);
  at::parallel_for(0, n * c, std::max<int64_t>(1, 32768 / std::max<int64_t>(hw, 1)), [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const T* src = py + p * hw;
      const double shift = py[(p % c) * hw];
      double s = 0, ss = 0;
#pragma omp simd reduction(+ : s, ss)
      for (int64_t k = 0; k < hw; ++k) {
        const double d = static_cast<double>(src[k]) - shift;
        s += d;
        ss += d * d;
      }
      partial[2 * p] = s;
      partial[2 * p + 1] = ss;
    }
  });
  const double count = static_cast<double>(n * hw);
  T* pm = mean.data_ptr<T>();
  T* pv = var.data_ptr<T>();
  for (int64_t ch = 0; ch < c; ++ch) {
    double s = 0, ss = 0;
    for (int64_t i = 0; i < n; ++i) {
      s += partial[2 * (i * c + ch)];
      ss += partial[2 * (i * c + ch) + 1];
    }
    const double m = s / count;
    pm[ch] = static_cast<T>(py[ch * hw] + m);
    pv[ch] = static_cast<T>(std::max(ss / count - m * m, 0.0));
  }
}

// Per channel, BN's y * scale + shift: scale = gamma / sqrt(var + eps), shift = beta - mean * scale.
template <typename T>
void bn_affine(const at::Tensor& gamma, const at::Tensor& beta, const T* mean, const T* var, double eps,
               std::vector<T>& scale, std::vector<T>& shift) {
  const int64_t c = gamma.size(0);
  const T* g = gamma.data_ptr<T>();
  const T* b = beta.data_ptr<T>();
  scale.resize(c);
  shift.resize(c);
  for (int64_t ch = 0; ch < c; ++ch) {
    scale[ch] = g[ch] / std::sqrt(var[ch] + static_cast<T>(eps));
    shift[ch] = b[ch] - mean[ch] * scale[ch];
  }
}

struct Shape {
  int64_t n, c, h, w;
  int64_t hw() const { return h * w; }
};

template <typename T>
void forward_pass(const Shape& s, const T* x, const T* y1, const T* y3, const T* wt, const std::vector<T>& scale1,
                  const std::vector<T>& shift1, const std::vector<T>& scale3, const std::vector<T>& shift3, T* out) {
  const int64_t hw = s.hw();
  const auto inv = inverse_counts<T>(s.h, s.w);
  const T zero_w = wt[0], skip_w = wt[1], pool_w = wt[4];
  at::parallel_for(0, s.n * s.c, std::max<int64_t>(1, 16384 / std::max<int64_t>(hw, 1)), [&](int64_t b, int64_t e) {
    std::vector<T> v(hw + 2, T(0)), box(hw);
    const T* ic = inv.data();
    for (int64_t p = b; p < e; ++p) {
      const int64_t ch = p % s.c;
      const T a1 = wt[2] * scale1[ch], a3 = wt[3] * scale3[ch];
      const T bias = wt[2] * shift1[ch] + wt[3] * shift3[ch];
      const T *xp = x + p * hw, *r1 = y1 + p * hw, *r3 = y3 + p * hw;
      T* dst = out + p * hw;
      box_sum(xp, s.h, s.w, v.data(), box.data());
#pragma omp simd
      for (int64_t k = 0; k < hw; ++k)
        dst[k] = zero_w * (xp[k] * T(0)) + skip_w * xp[k] + (a1 * r1[k] + a3 * r3[k] + bias) +
                 pool_w * (box[k] * ic[k]);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mixed_edge(
    const at::Tensor& x_in, const at::Tensor& weights, const at::Tensor& conv1, const at::Tensor& conv3,
    const at::Tensor& bn1_weight, const at::Tensor& bn1_bias, const at::Tensor& bn1_mean, const at::Tensor& bn1_var,
    const at::Tensor& bn3_weight, const at::Tensor& bn3_bias, const at::Tensor& bn3_mean, const at::Tensor& bn3_var,
    bool training, double eps) {
  check_args(x_in, weights, conv1, conv3,
             {&bn1_weight, &bn1_bias, &bn1_mean, &bn1_var, &bn3_weight, &bn3_bias, &bn3_mean, &bn3_var});
  const at::Tensor x = x_in.contiguous();
  const Shape s{x.size(0), x.size(1), x.size(2), x.size(3)};
  TORCH_CHECK_VALUE(!training || s.n * s.hw() > 1, "mixed_edge: training batch norm needs more than one value "
                    "per channel, got input of shape ", x.sizes());
  at::Tensor relu = at::relu(x);
  // oneDNN runs the 3x3 convolution (forward and backward) much faster on channels-last tensors than on
  // NCHW ones at these small channel counts, even counting the two layout copies.
  const at::Tensor relu_cl = relu.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor y3 = at::convolution(relu_cl, conv3.contiguous(at::MemoryFormat::ChannelsLast), std::nullopt, {1, 1},
                                  {1, 1}, {1, 1}, false, {0, 0}, 1)
                      .contiguous();
  at::Tensor y1 = at::bmm(conv1.reshape({s.c, s.c}).expand({s.n, s.c, s.c}), relu.view({s.n, s.c, s.hw()}))
                      .view(x.sizes());
  at::Tensor stats = at::empty({4, s.c}, x.options());  // mean1, var1, mean3, var3 (biased)
  at::Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mixed_edge_cpu", [&] {
    if (training) {
      auto m1 = stats[0], v1 = stats[1], m3 = stats[2], v3 = stats[3];
      channel_moments<scalar_t>(y1, m1, v1);
      channel_moments<scalar_t>(y3, m3, v3);
    } else {
      stats.copy_(at::stack({bn1_mean, bn1_var, bn3_mean, bn3_var}));
    }
    const scalar_t* st = stats.data_ptr<scalar_t>();
    std::vector<scalar_t> scale1, shift1, scale3, shift3;
    bn_affine<scalar_t>(bn1_weight.contiguous(), bn1_bias.contiguous(), st, st + s.c, eps, scale1, shift1);
    bn_affine<scalar_t>(bn3_weight.contiguous(), bn3_bias.contiguous(), st + 2 * s.c, st + 3 * s.c, eps, scale3,
                        shift3);
    const at::Tensor wt = weights.contiguous();
    forward_pass<scalar_t>(s, x.data_ptr<scalar_t>(), y1.data_ptr<scalar_t>(), y3.data_ptr<scalar_t>(),
                           wt.data_ptr<scalar_t>(), scale1, shift1, scale3, shift3, out.data_ptr<scalar_t>());
  });
  return {out, relu, y1, y3, stats};
}

// Sums per (image, channel) plane, for the backward: grad, grad * (x * 0), grad * x, grad * pool(x),
// grad * (y1 - mean1), grad * (y3 - mean3).
constexpr int kSums = 6;

template <typename T>
void backward_sums(const Shape& s, const T* g, const T* x, const T* y1, const T* y3, const T* mean1,
                   const T* mean3, std::vector<double>& partial) {
  const int64_t hw = s.hw();
  const auto inv = inverse_counts<T>(s.h, s.w);
  partial.assign(kSums * s.n * s.c, 0.0);
  at::parallel_for(0, s.n * s.c, std::max<int64_t>(1, 16384 / std::max<int64_t>(hw, 1)), [&](int64_t b, int64_t e) {
    std::vector<T> v(hw + 2, T(0)), box(hw);
    const T* ic = inv.data();
    for (int64_t p = b; p < e; ++p) {
      const int64_t ch = p % s.c;
      const T m1 = mean1[ch], m3 = mean3[ch];
      const T *gp = g + p * hw, *xp = x + p * hw, *r1 = y1 + p * hw, *r3 = y3 + p * hw;
      box_sum(xp, s.h, s.w, v.data(), box.data());
      double sg = 0, sz = 0, sx = 0, sp = 0, s1 = 0, s3 = 0;
#pragma omp simd reduction(+ : sg, sz, sx, sp, s1, s3)
      for (int64_t k = 0; k < hw; ++k) {
        const double gk = gp[k];
        sg += gk;
        sz += gk * (xp[k] * T(0));
        sx += gk * xp[k];
        sp += gk * (box[k] * ic[k]);
        s1 += gk * (r1[k] - m1);
        s3 += gk * (r3[k] - m3);
      }
      double* dst = partial.data() + kSums * p;
      dst[0] = sg, dst[1] = sz, dst[2] = sx, dst[3] = sp, dst[4] = s1, dst[5] = s3;
    }
  });
}

// grad of a convolution output: k * (g - sum_g / M - (y - mean) * invstd^2 * sum_gy / M) in training (BN's
// backward through the batch statistics), k * g in eval; k = w * gamma * invstd.
template <typename T>
void conv_output_grads(const Shape& s, const T* g, const T* y1, const T* y3, const std::array<std::vector<T>, 3>& k1,
                       const std::array<std::vector<T>, 3>& k3, const T* mean1, const T* mean3, T* dy1, T* dy3) {
  at::parallel_for(0, s.n * s.c, std::max<int64_t>(1, 32768 / std::max<int64_t>(s.hw(), 1)), [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const int64_t ch = p % s.c;
      const T a1 = k1[0][ch], c1 = k1[1][ch], u1 = k1[2][ch], m1 = mean1[ch];
      const T a3 = k3[0][ch], c3 = k3[1][ch], u3 = k3[2][ch], m3 = mean3[ch];
      const int64_t o = p * s.hw();
      const T *gp = g + o, *r1 = y1 + o, *r3 = y3 + o;
      T *d1 = dy1 + o, *d3 = dy3 + o;
#pragma omp simd
      for (int64_t k = 0; k < s.hw(); ++k) {
        d1[k] = a1 * gp[k] + c1 + u1 * (r1[k] - m1);
        d3[k] = a3 * gp[k] + c3 + u3 * (r3[k] - m3);
      }
    }
  });
}

// grad_x = relu'(x) * grad_r + w1 * g + (w0 * 0) * g + w4 * box3x3(g / count) (pooling's transpose: every
// output spreads its gradient over its window, and the window is symmetric).
template <typename T>
void input_grad(const Shape& s, const T* g, const T* x, const T* grad_r, const T* wt, T* gx) {
  const int64_t hw = s.hw();
  const auto inv = inverse_counts<T>(s.h, s.w);
  const T zero_w = wt[0] * T(0), skip_w = wt[1], pool_w = wt[4];
  at::parallel_for(0, s.n * s.c, std::max<int64_t>(1, 16384 / std::max<int64_t>(hw, 1)), [&](int64_t b, int64_t e) {
    std::vector<T> scaled(hw), v(hw + 2, T(0)), box(hw);
    const T* ic = inv.data();
    for (int64_t p = b; p < e; ++p) {
      const T *gp = g + p * hw, *xp = x + p * hw, *rp = grad_r + p * hw;
      T* dst = gx + p * hw;
#pragma omp simd
      for (int64_t k = 0; k < hw; ++k) scaled[k] = gp[k] * ic[k];
      box_sum(scaled.data(), s.h, s.w, v.data(), box.data());
#pragma omp simd
      for (int64_t k = 0; k < hw; ++k) {
        const T through = rp[k];  // loaded unconditionally, so that the select vectorises
        dst[k] = (xp[k] > T(0) ? through : T(0)) + skip_w * gp[k] + zero_w * gp[k] + pool_w * box[k];
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
mixed_edge_backward(const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& weights,
                    const at::Tensor& conv1, const at::Tensor& conv3, const at::Tensor& bn1_weight,
                    const at::Tensor& bn1_bias, const at::Tensor& bn3_weight, const at::Tensor& bn3_bias,
                    const at::Tensor& relu, const at::Tensor& y1, const at::Tensor& y3, const at::Tensor& stats,
                    bool training, double eps) {
  check_args(x_in, weights, conv1, conv3, {&bn1_weight, &bn1_bias, &bn3_weight, &bn3_bias});
  const at::Tensor x = x_in.contiguous(), grad = grad_in.contiguous();
  TORCH_CHECK_VALUE(grad.sizes() == x.sizes() && relu.sizes() == x.sizes() && y1.sizes() == x.sizes() &&
                    y3.sizes() == x.sizes() && relu.is_contiguous() && y1.is_contiguous() && y3.is_contiguous(),
                    "mixed_edge_backward: grad and the saved tensors must match x's shape, contiguous");
  const Shape s{x.size(0), x.size(1), x.size(2), x.size(3)};
  TORCH_CHECK_VALUE(stats.sizes() == at::IntArrayRef({4, s.c}) && stats.is_contiguous(),
                    "mixed_edge_backward: stats must be [4, C] as mixed_edge returns them");
  at::Tensor dy1 = at::empty_like(x), dy3 = at::empty_like(x);
  at::Tensor grad_weights = at::empty({kOps}, x.options());
  std::array<at::Tensor, 4> grad_bn;  // bn1 weight, bn1 bias, bn3 weight, bn3 bias
  for (auto& t : grad_bn) t = at::empty({s.c}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mixed_edge_backward_cpu", [&] {
    using T = scalar_t;
    const T* st = stats.data_ptr<T>();
    const T *mean1 = st, *var1 = st + s.c, *mean3 = st + 2 * s.c, *var3 = st + 3 * s.c;
    std::vector<double> partial;
    backward_sums<T>(s, grad.data_ptr<T>(), x.data_ptr<T>(), y1.data_ptr<T>(), y3.data_ptr<T>(), mean1, mean3,
                     partial);
    const at::Tensor wtc = weights.contiguous();
    const T* wt = wtc.data_ptr<T>();
    const T* g1 = bn1_weight.contiguous().data_ptr<T>();
    const T* b1 = bn1_bias.contiguous().data_ptr<T>();
    const T* g3 = bn3_weight.contiguous().data_ptr<T>();
    const T* b3 = bn3_bias.contiguous().data_ptr<T>();
    const double count = static_cast<double>(s.n * s.hw());
    std::array<double, kOps> gw{};
    std::array<std::vector<T>, 3> k1, k3;  // per channel: scale of g, constant, scale of (y - mean)
    for (auto* k : {&k1, &k3})
      for (auto& v : *k) v.assign(s.c, T(0));
    T* gb[4] = {grad_bn[0].data_ptr<T>(), grad_bn[1].data_ptr<T>(), grad_bn[2].data_ptr<T>(),
                grad_bn[3].data_ptr<T>()};
    for (int64_t ch = 0; ch < s.c; ++ch) {
      std::array<double, kSums> sum{};
      for (int64_t i = 0; i < s.n; ++i)
        for (int k = 0; k < kSums; ++k) sum[k] += partial[kSums * (i * s.c + ch) + k];
      const double is1 = 1.0 / std::sqrt(static_cast<double>(var1[ch]) + eps);
      const double is3 = 1.0 / std::sqrt(static_cast<double>(var3[ch]) + eps);
      const double xh1 = sum[4] * is1, xh3 = sum[5] * is3;  // sum of grad * normalised y
      gw[0] += sum[1];
      gw[1] += sum[2];
      gw[2] += g1[ch] * xh1 + b1[ch] * sum[0];
      gw[3] += g3[ch] * xh3 + b3[ch] * sum[0];
      gw[4] += sum[3];
      gb[0][ch] = static_cast<T>(wt[2] * xh1);
      gb[1][ch] = static_cast<T>(wt[2] * sum[0]);
      gb[2][ch] = static_cast<T>(wt[3] * xh3);
      gb[3][ch] = static_cast<T>(wt[3] * sum[0]);
      const double a1 = wt[2] * g1[ch] * is1, a3 = wt[3] * g3[ch] * is3;
      k1[0][ch] = static_cast<T>(a1);
      k3[0][ch] = static_cast<T>(a3);
      if (training) {
        k1[1][ch] = static_cast<T>(-a1 * sum[0] / count);
        k1[2][ch] = static_cast<T>(-a1 * is1 * xh1 / count);
        k3[1][ch] = static_cast<T>(-a3 * sum[0] / count);
        k3[2][ch] = static_cast<T>(-a3 * is3 * xh3 / count);
      }
    }
    T* pgw = grad_weights.data_ptr<T>();
    for (int k = 0; k < kOps; ++k) pgw[k] = static_cast<T>(gw[k]);
    conv_output_grads<T>(s, grad.data_ptr<T>(), y1.data_ptr<T>(), y3.data_ptr<T>(), k1, k3, mean1, mean3,
                         dy1.data_ptr<T>(), dy3.data_ptr<T>());
  });
  const auto cl = at::MemoryFormat::ChannelsLast;  // as in the forward
  auto [grad_r3, grad_conv3, unused] = at::convolution_backward(
      dy3.contiguous(cl), relu.contiguous(cl), conv3.contiguous(cl), std::nullopt, {1, 1}, {1, 1}, {1, 1}, false,
      {0, 0}, 1, {true, true, false});
  at::Tensor grad_r = grad_r3.contiguous();  // + the 1x1 convolution's share, in place:
  const at::Tensor d1 = dy1.view({s.n, s.c, s.hw()}), r = relu.view({s.n, s.c, s.hw()});
  grad_r.view({s.n, s.c, s.hw()}).baddbmm_(conv1.reshape({s.c, s.c}).t().expand({s.n, s.c, s.c}), d1);
  const at::Tensor grad_conv1 = at::bmm(d1, r.transpose(1, 2)).sum(0).view(conv1.sizes());
  at::Tensor grad_x = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mixed_edge_input_grad_cpu", [&] {
    const at::Tensor wtc = weights.contiguous();
    input_grad<scalar_t>(s, grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), grad_r.data_ptr<scalar_t>(),
                         wtc.data_ptr<scalar_t>(), grad_x.data_ptr<scalar_t>());
  });
  return {grad_x, grad_weights, grad_conv1, grad_conv3.contiguous(), grad_bn[0], grad_bn[1], grad_bn[2],
          grad_bn[3]};
}

// nn.BatchNorm2d's running-statistics step for both batch norms: running = (1 - f) * running + f * batch, the
// variance unbiased (count / (count - 1)); `stats` as mixed_edge returns it.
void mixed_edge_update_stats(at::Tensor& mean1, at::Tensor& var1, at::Tensor& mean3, at::Tensor& var3,
                             const at::Tensor& stats, double factor, int64_t count) {
  TORCH_CHECK_VALUE(stats.dim() == 2 && stats.size(0) == 4 && count > 1,
                    "mixed_edge_update_stats: stats must be [4, C] and count above 1");
  const double unbias = static_cast<double>(count) / static_cast<double>(count - 1);
  at::Tensor* targets[4] = {&mean1, &var1, &mean3, &var3};
  for (int k = 0; k < 4; ++k) {
    TORCH_CHECK_VALUE(targets[k]->sizes() == stats[k].sizes(), "mixed_edge_update_stats: running statistics of ",
                      stats.size(1), " channels expected, got shape ", targets[k]->sizes());
    const at::Tensor batch = k % 2 ? stats[k] * unbias : stats[k];
    targets[k]->mul_(1.0 - factor).add_(batch, factor);
  }
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(oneshot, m) {
  m.def("mixed_edge(Tensor x, Tensor weights, Tensor conv1, Tensor conv3, Tensor bn1_weight, Tensor bn1_bias, "
        "Tensor bn1_mean, Tensor bn1_var, Tensor bn3_weight, Tensor bn3_bias, Tensor bn3_mean, Tensor bn3_var, "
        "bool training, float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("mixed_edge_backward(Tensor grad, Tensor x, Tensor weights, Tensor conv1, Tensor conv3, "
        "Tensor bn1_weight, Tensor bn1_bias, Tensor bn3_weight, Tensor bn3_bias, Tensor relu, Tensor y1, "
        "Tensor y3, Tensor stats, bool training, float eps) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("mixed_edge_update_stats(Tensor(a!) mean1, Tensor(b!) var1, Tensor(c!) mean3, Tensor(d!) var3, "
        "Tensor stats, float factor, int count) -> ()");
}

TORCH_LIBRARY_IMPL(oneshot, CPU, m) {
  m.impl("mixed_edge", &mixed_edge);
  m.impl("mixed_edge_backward", &mixed_edge_backward);
  m.impl("mixed_edge_update_stats", &mixed_edge_update_stats);
}

}  // namespace oneshot
