// Architecture sampler and scorer over a space's slot layout (supernet.family.SlotLayout; supernet.sampler has
// the references). The kernels know groups of slots, never a family: mbv3 maps stages of blocks onto them
// (depth elastic, choice = kernel x expand), nb201 six edges of one slot each (choice = op). Below, "stage"
// is a group, "block" a slot, and "kernel" / "expand" the two digits of a slot's choice.
//
// Encoding: int8 codes [N, K], K = S * (1 + 2 * D); per stage s the depth option index, then for every block
// b < D its kernel and expand option indices. Inactive blocks (b >= depth) hold 0 and are ignored.
//
//   score_archs(codes, table [S, D, C, M] f64, base [M] f64, depths, num_expands) -> [N, M] f64
//     out[n] = base + sum over stages s, active blocks b (in that order) of table[s, b, k * E + e]
//
//   sample_archs(n, seed, num_stages, depths, num_kernels, num_expands, ticks?, lo, hi) -> int8 [N, K]
//     ticks == None: uniform over distinct networks: one draw per stage picks an integer in
//       [0, sum_d C^d), decoded into the depth and the blocks' choices (C = kernels * expands).
//     ticks [S, D, C] int64 >= 0: uniform over networks whose tick sum lies in [lo, hi]. Dynamic programming
//       counts (float64) networks per tick sum: per block suffix products inside a stage, per stage, and
//       across stages; sampling draws the stage tick sums then each stage's depth and blocks, each from its
//       exact conditional distribution (inverse CDF, binary search over precomputed rows).
//
// Randomness is counter based: draw j of architecture i is splitmix64 step j + 1 from the state
// mix(mix(seed) + i * golden), so every architecture is independent of the others and of the thread that
// draws it, and the numpy reference reproduces the codes bit for bit. Tables are built with the same
// operations in the same order as the reference (see supernet/sampler.py), so outputs are identical.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

namespace oneshot {
namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

inline uint64_t arch_key(uint64_t seed, uint64_t i) { return mix64(mix64(seed) + i * kGolden); }
inline uint64_t draw(uint64_t key, uint64_t j) { return mix64(key + (j + 1) * kGolden); }
// floor(r * n / 2^64): an integer in [0, n), as the reference computes it with 32-bit halves.
inline uint64_t below(uint64_t r, uint64_t n) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(r) * n) >> 64);
}
inline double unit(uint64_t r) { return static_cast<double>(r >> 11) * 0x1.0p-53; }

// Inverse CDF: the first index whose cumulative count exceeds u * total (never a zero-weight entry).
inline int64_t pick(const double* cdf, int64_t len, double u) {
  const double total = cdf[len - 1];
  const double target = u * total;
  int64_t idx = std::upper_bound(cdf, cdf + len, target) - cdf;
  if (idx == len) idx = std::lower_bound(cdf, cdf + len, total) - cdf;  // u * total rounded up to total
  return idx;
}

// The same index as pick, by a branch-free count: for the few choices of a depth or a block.
inline int64_t pick_small(const double* cdf, int64_t len, double u) {
  const double total = cdf[len - 1];
  const double target = u * total;
  int64_t idx = 0;
  for (int64_t c = 0; c < len; ++c) idx += cdf[c] <= target;
  if (idx == len) {
    idx = 0;
    for (int64_t c = 0; c < len; ++c) idx += cdf[c] < total;
  }
  return idx;
}

struct Shape {
  int64_t stages, max_depth, kernels, expands, choices, width;
  std::vector<int64_t> depths;
};

Shape make_shape(int64_t stages, c10::IntArrayRef depths, int64_t kernels, int64_t expands) {
  TORCH_CHECK(stages >= 1 && !depths.empty() && kernels >= 1 && expands >= 1,
              "sample_archs: stages, depths, kernels and expands must be non-empty");
  TORCH_CHECK(static_cast<int64_t>(depths.size()) <= 127 && kernels <= 127 && expands <= 127,
              "sample_archs: int8 codes hold at most 127 options per choice");
  Shape sh{stages, 0, kernels, expands, kernels * expands, 0, {depths.begin(), depths.end()}};
  for (int64_t d : sh.depths) {
    TORCH_CHECK(d >= 1, "sample_archs: depths must be positive, got ", d);
    sh.max_depth = std::max(sh.max_depth, d);
  }
  sh.width = 1 + 2 * sh.max_depth;
  return sh;
}

inline void write_block(int8_t* stage_code, int64_t b, int64_t c, int64_t expands) {
  stage_code[1 + 2 * b] = static_cast<int8_t>(c / expands);
  stage_code[2 + 2 * b] = static_cast<int8_t>(c % expands);
}

void sample_uniform(const Shape& sh, int64_t n, uint64_t seed, int8_t* out) {
  // Per stage: networks with depth d number C^d; a stage's index runs over all of them, depth by depth.
  std::vector<uint64_t> per_depth;
  unsigned __int128 total = 0;
  for (int64_t d : sh.depths) {
    unsigned __int128 count = 1;
    for (int64_t b = 0; b < d; ++b) {
      count *= static_cast<uint64_t>(sh.choices);
      TORCH_CHECK(count < (static_cast<unsigned __int128>(1) << 63), "sample_archs: a stage has 2^63 or more networks");
    }
    per_depth.push_back(static_cast<uint64_t>(count));
    total += count;
  }
  TORCH_CHECK(total < (static_cast<unsigned __int128>(1) << 63), "sample_archs: a stage has 2^63 or more networks");
  const uint64_t stage_total = static_cast<uint64_t>(total);
  const int64_t K = sh.stages * sh.width, nd = static_cast<int64_t>(sh.depths.size());
  // Decode a stage index into its codes; with few enough stage networks, once each into a lookup table.
  auto decode = [&](uint64_t x, int8_t* sc) {
    int64_t di = 0;
    while (di < nd - 1 && x >= per_depth[di]) x -= per_depth[di++];
    sc[0] = static_cast<int8_t>(di);
    for (int64_t b = 0; b < sh.depths[di]; ++b) {
      write_block(sc, b, static_cast<int64_t>(x % sh.choices), sh.expands);
      x /= sh.choices;
    }
  };
  const bool use_lut = stage_total <= (1u << 20);
  std::vector<int8_t> lut(use_lut ? stage_total * sh.width : 0, 0);
  if (use_lut)
    for (uint64_t x = 0; x < stage_total; ++x) decode(x, lut.data() + x * sh.width);
  at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint64_t key = arch_key(seed, static_cast<uint64_t>(i));
      int8_t* code = out + i * K;
      for (int64_t s = 0; s < sh.stages; ++s) {
        const uint64_t x = below(draw(key, s), stage_total);
        if (use_lut) {
          std::memcpy(code + s * sh.width, lut.data() + x * sh.width, sh.width);
        } else {
          decode(x, code + s * sh.width);
        }
      }
    }
  });
}

// Counting tables for the windowed sampler; layouts as in supernet.sampler._window_tables.
struct Window {
  int64_t L = 0, total_len = 0, xlo = 0, xhi = 0;
  std::vector<int64_t> stage_max, row_lo, row_hi;
  std::vector<double> suffix;               // [S, nd, D + 1, L + 1]: blocks b.. of depth option di per tick sum
  std::vector<double> first;                // [W]: cumulative counts of the window's tick sums
  std::vector<std::vector<double>> split;   // per stage s < S - 1: [rows, stage_max[s] + 1] conditional CDFs
};

Window build_window(const Shape& sh, const int64_t* t, int64_t lo, int64_t hi) {
  const int64_t S = sh.stages, D = sh.max_depth, C = sh.choices, nd = static_cast<int64_t>(sh.depths.size());
  Window w;
  for (int64_t s = 0; s < S; ++s) {
    int64_t best = 0;
    for (int64_t d : sh.depths) {
      int64_t sum = 0;
      for (int64_t b = 0; b < d; ++b) sum += *std::max_element(t + (s * D + b) * C, t + (s * D + b + 1) * C);
      best = std::max(best, sum);
    }
    w.stage_max.push_back(best);
    w.L = std::max(w.L, best);
    w.total_len += best;
  }
  const int64_t L1 = w.L + 1;
  w.suffix.assign(S * nd * (D + 1) * L1, 0.0);
  std::vector<double> F(S * L1, 0.0);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t di = 0; di < nd; ++di) {
      double* g = w.suffix.data() + ((s * nd + di) * (D + 1)) * L1;
      const int64_t dv = sh.depths[di];
      g[dv * L1] = 1.0;
      for (int64_t b = dv - 1; b >= 0; --b) {
        const double* next = g + (b + 1) * L1;
        double* cur = g + b * L1;
        for (int64_t c = 0; c < C; ++c) {
          const int64_t shift = t[(s * D + b) * C + c];
          for (int64_t k = 0; k + shift < L1; ++k) cur[k + shift] += next[k];
        }
      }
      for (int64_t y = 0; y < L1; ++y) F[s * L1 + y] += g[y];
    }
  }
  // H[s][x]: networks of stages s.. with tick sum x, built from the last stage backwards.
  const int64_t T1 = w.total_len + 1;
  std::vector<double> H((S + 1) * T1, 0.0);
  H[S * T1] = 1.0;
  for (int64_t s = S - 1; s >= 0; --s) {
    const double* next = H.data() + (s + 1) * T1;
    double* cur = H.data() + s * T1;
    for (int64_t y = 0; y <= w.stage_max[s]; ++y) {
      const double f = F[s * L1 + y];
      if (f == 0.0) continue;
      for (int64_t x = 0; x + y < T1; ++x) cur[x + y] += f * next[x];
    }
  }
  w.xlo = std::max<int64_t>(lo, 0);
  w.xhi = std::min<int64_t>(hi, w.total_len);
  double acc = 0.0;
  for (int64_t x = w.xlo; x <= w.xhi; ++x) w.first.push_back(acc += H[x]);
  TORCH_CHECK(!w.first.empty() && acc > 0.0, "sample_archs: the window [", lo, ", ", hi,
              "] ticks holds no architecture");
  int64_t rlo = w.xlo, rhi = w.xhi, suffix_max = w.total_len;
  for (int64_t s = 0; s + 1 < S; ++s) {
    const int64_t Y1 = w.stage_max[s] + 1;
    w.row_lo.push_back(rlo);
    w.row_hi.push_back(rhi);
    std::vector<double> rows((rhi - rlo + 1) * Y1, 0.0);
    const double* next = H.data() + (s + 1) * T1;
    for (int64_t x = rlo; x <= rhi; ++x) {
      double* row = rows.data() + (x - rlo) * Y1;
      double sum = 0.0;
      for (int64_t y = 0; y < Y1; ++y) {
        const double wgt = (y <= x && x - y < T1) ? F[s * L1 + y] * next[x - y] : 0.0;
        row[y] = (sum += wgt);
      }
    }
    w.split.push_back(std::move(rows));
    suffix_max -= w.stage_max[s];
    rlo = std::max<int64_t>(rlo - w.stage_max[s], 0);
    rhi = std::min<int64_t>(rhi, suffix_max);
  }
  return w;
}

void sample_window(const Shape& sh, int64_t n, uint64_t seed, const int64_t* t, int64_t lo, int64_t hi, int8_t* out) {
  const Window w = build_window(sh, t, lo, hi);
  const int64_t S = sh.stages, D = sh.max_depth, C = sh.choices, nd = static_cast<int64_t>(sh.depths.size());
  const int64_t K = S * sh.width, L1 = w.L + 1;
  // Conditional CDFs of every stage's depth [S, L1, nd] and every block's choice [S, nd, D, L1, C] given the
  // ticks left, accumulated exactly as the reference accumulates them per sample.
  std::vector<double> depth_cdf(S * L1 * nd), block_cdf(S * nd * D * L1 * C, 0.0);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t z = 0; z < L1; ++z) {
      double acc = 0.0;
      for (int64_t di = 0; di < nd; ++di) depth_cdf[(s * L1 + z) * nd + di] = (acc += w.suffix[((s * nd + di) * (D + 1)) * L1 + z]);
    }
    for (int64_t di = 0; di < nd; ++di) {
      const double* g = w.suffix.data() + ((s * nd + di) * (D + 1)) * L1;
      for (int64_t b = 0; b < sh.depths[di]; ++b) {
        const int64_t* tb = t + (s * D + b) * C;
        const double* next = g + (b + 1) * L1;
        for (int64_t z = 0; z < L1; ++z) {
          double* cum = block_cdf.data() + (((s * nd + di) * D + b) * L1 + z) * C;
          double acc = 0.0;
          for (int64_t c = 0; c < C; ++c) cum[c] = (acc += (z - tb[c] >= 0 ? next[z - tb[c]] : 0.0));
        }
      }
    }
  }
  at::parallel_for(0, n, 2048, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> ys(S);
    for (int64_t i = begin; i < end; ++i) {
      const uint64_t key = arch_key(seed, static_cast<uint64_t>(i));
      int64_t x = w.xlo + pick(w.first.data(), static_cast<int64_t>(w.first.size()), unit(draw(key, 0)));
      for (int64_t s = 0; s + 1 < S; ++s) {
        const int64_t Y1 = w.stage_max[s] + 1;
        const double* row = w.split[s].data() + (x - w.row_lo[s]) * Y1;
        ys[s] = pick(row, Y1, unit(draw(key, 1 + s)));
        x -= ys[s];
      }
      ys[S - 1] = x;
      int8_t* code = out + i * K;
      for (int64_t s = 0; s < S; ++s) {
        const uint64_t j0 = S + s * (1 + D);
        int64_t z = ys[s];
        const int64_t di = pick_small(depth_cdf.data() + (s * L1 + z) * nd, nd, unit(draw(key, j0)));
        int8_t* sc = code + s * sh.width;
        sc[0] = static_cast<int8_t>(di);
        const double* cdfs = block_cdf.data() + ((s * nd + di) * D) * L1 * C;
        for (int64_t b = 0; b < sh.depths[di]; ++b) {
          const int64_t c = pick_small(cdfs + (b * L1 + z) * C, C, unit(draw(key, j0 + 1 + b)));
          write_block(sc, b, c, sh.expands);
          z -= t[(s * D + b) * C + c];
        }
      }
    }
  });
}

struct Layout {
  int64_t S, D, C, E, width;
};

// Rows of the scorer; FixedM > 0 is the metric count known at compile time (0: use M).
template <int64_t FixedM>
void score_rows(const Layout& lay, const std::vector<int64_t>& depth, const int8_t* cp, const double* tp,
                const double* bp, double* op, int64_t n, int64_t M_) {
  const int64_t M = FixedM > 0 ? FixedM : M_;
  at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
    std::vector<double> acc_store(FixedM > 0 ? 0 : M);
    double fixed_acc[FixedM > 0 ? FixedM : 1];
    double* acc = FixedM > 0 ? fixed_acc : acc_store.data();
    for (int64_t row = begin; row < end; ++row) {
      const int8_t* code = cp + row * lay.S * lay.width;
      for (int64_t m = 0; m < M; ++m) acc[m] = bp[m];
      for (int64_t s = 0; s < lay.S; ++s) {
        const int8_t* sc = code + s * lay.width;
        const int64_t dv = depth[sc[0]];
        const double* stage = tp + s * lay.D * lay.C * M;
        for (int64_t b = 0; b < dv; ++b) {
          const double* src = stage + (b * lay.C + sc[1 + 2 * b] * lay.E + sc[2 + 2 * b]) * M;
#pragma omp simd
          for (int64_t m = 0; m < M; ++m) acc[m] += src[m];
        }
      }
      for (int64_t m = 0; m < M; ++m) op[row * M + m] = acc[m];
    }
  });
}

}  // namespace

at::Tensor sample_archs_cpu(int64_t n, int64_t seed, int64_t num_stages, c10::IntArrayRef depths,
                            int64_t num_kernels, int64_t num_expands, const std::optional<at::Tensor>& ticks,
                            int64_t lo, int64_t hi) {
  TORCH_CHECK(n >= 0, "sample_archs: n must not be negative, got ", n);
  const Shape sh = make_shape(num_stages, depths, num_kernels, num_expands);
  auto out = at::zeros({n, sh.stages * sh.width}, at::TensorOptions().dtype(at::kChar));
  if (!ticks.has_value()) {
    if (n > 0) sample_uniform(sh, n, static_cast<uint64_t>(seed), out.data_ptr<int8_t>());
    return out;
  }
  const auto t = ticks->contiguous();
  TORCH_CHECK(t.scalar_type() == at::kLong && t.dim() == 3 && t.size(0) == sh.stages && t.size(1) == sh.max_depth &&
                  t.size(2) == sh.choices,
              "sample_archs: ticks must be int64 [", sh.stages, ", ", sh.max_depth, ", ", sh.choices, "]");
  TORCH_CHECK(t.numel() == 0 || t.min().item<int64_t>() >= 0, "sample_archs: ticks must not be negative");
  TORCH_CHECK(lo <= hi, "sample_archs: window lo ", lo, " > hi ", hi);
  sample_window(sh, n, static_cast<uint64_t>(seed), t.data_ptr<int64_t>(), lo, hi, out.data_ptr<int8_t>());
  return out;
}

at::Tensor score_archs_cpu(const at::Tensor& codes, const at::Tensor& table, const at::Tensor& base,
                           c10::IntArrayRef depths, int64_t num_expands) {
  TORCH_CHECK(codes.dim() == 2 && codes.scalar_type() == at::kChar, "score_archs: codes must be int8 [N, K]");
  TORCH_CHECK(table.dim() == 4 && table.scalar_type() == at::kDouble, "score_archs: table must be float64 [S, D, C, M]");
  TORCH_CHECK(base.dim() == 1 && base.scalar_type() == at::kDouble && base.size(0) == table.size(3),
              "score_archs: base must be float64 [M] with M = table.size(3)");
  TORCH_CHECK(num_expands >= 1 && table.size(2) % num_expands == 0,
              "score_archs: table.size(2) must be kernels * num_expands");
  const int64_t S = table.size(0), D = table.size(1), C = table.size(2), M = table.size(3);
  const int64_t E = num_expands, KK = C / E, nd = static_cast<int64_t>(depths.size()), width = 1 + 2 * D;
  TORCH_CHECK(codes.size(1) == S * width, "score_archs: codes have ", codes.size(1), " columns, the table implies ",
              S * width);
  for (int64_t d : depths) TORCH_CHECK(d >= 1 && d <= D, "score_archs: depth ", d, " is outside [1, ", D, "]");
  const auto cd = codes.contiguous();
  const auto tab = table.contiguous();
  const int64_t n = cd.size(0);
  auto out = at::empty({n, M}, tab.options());
  const int8_t* cp = cd.data_ptr<int8_t>();
  // Range check first, so a bad code raises before any work and never inside the parallel region.
  for (int64_t i = 0; i < n * S; ++i) {
    const int8_t* sc = cp + i * width;
    TORCH_CHECK(sc[0] >= 0 && sc[0] < nd, "score_archs: depth index ", int(sc[0]), " at row ", i / S, ", stage ",
                i % S, " is out of range [0, ", nd, ")");
    for (int64_t b = 0; b < D; ++b)
      TORCH_CHECK(sc[1 + 2 * b] >= 0 && sc[1 + 2 * b] < KK && sc[2 + 2 * b] >= 0 && sc[2 + 2 * b] < E,
                  "score_archs: block code out of range at row ", i / S, ", stage ", i % S, ", block ", b);
  }
  const double* tp = tab.data_ptr<double>();
  const double* bp = base.contiguous().data_ptr<double>();
  double* op = out.data_ptr<double>();
  const std::vector<int64_t> depth(depths.begin(), depths.end());
  const Layout lay{S, D, C, E, width};
  switch (M) {  // a fixed metric count keeps the sums in registers
    case 1: score_rows<1>(lay, depth, cp, tp, bp, op, n, M); break;
    case 2: score_rows<2>(lay, depth, cp, tp, bp, op, n, M); break;
    case 3: score_rows<3>(lay, depth, cp, tp, bp, op, n, M); break;
    case 4: score_rows<4>(lay, depth, cp, tp, bp, op, n, M); break;
    default: score_rows<0>(lay, depth, cp, tp, bp, op, n, M);
  }
  return out;
}

TORCH_LIBRARY_FRAGMENT(oneshot, m) {
  m.def("score_archs(Tensor codes, Tensor table, Tensor base, int[] depths, int num_expands) -> Tensor");
  m.def("sample_archs(int n, int seed, int num_stages, int[] depths, int num_kernels, int num_expands, "
        "Tensor? ticks=None, int lo=0, int hi=0) -> Tensor");
}

TORCH_LIBRARY_IMPL(oneshot, CPU, m) {
  m.impl("score_archs", &score_archs_cpu);
}

// sample_archs has no tensor inputs when uniform, so it is registered for every backend (CompositeExplicit).
TORCH_LIBRARY_IMPL(oneshot, CompositeExplicitAutograd, m) {
  m.impl("sample_archs", &sample_archs_cpu);
}

}  // namespace oneshot
