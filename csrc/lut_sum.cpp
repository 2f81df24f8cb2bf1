// lut_sum: score many encoded architectures against additive lookup tables in one call.
//
//   out[n, m] = sum over s of table[s, indices[n, s], m]     (an index of -1 marks an unused slot)
//
// A slot is a place in the network (stem, a block position, head), C its choices, M the metrics summed
// (latency, FLOPs, params...). This file holds the schema and the CPU kernel; a CUDA kernel would live in
// csrc/cuda/lut_sum.cu and register only the CUDA key. The pure-PyTorch reference is
// supernet.kernels.lut_sum_reference.
#include <Python.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

namespace oneshot {

at::Tensor lut_sum_cpu(const at::Tensor& indices, const at::Tensor& table) {
  TORCH_CHECK(indices.dim() == 2, "lut_sum: indices must be 2-D [N, S], got ", indices.dim(), "-D");
  TORCH_CHECK(table.dim() == 3, "lut_sum: table must be 3-D [S, C, M], got ", table.dim(), "-D");
  TORCH_CHECK(indices.scalar_type() == at::kLong, "lut_sum: indices must be int64");
  TORCH_CHECK(table.scalar_type() == at::kFloat || table.scalar_type() == at::kDouble,
              "lut_sum: table must be float32 or float64");
  TORCH_CHECK(indices.size(1) == table.size(0), "lut_sum: indices have ", indices.size(1),
              " slots but the table has ", table.size(0));
  const auto idx = indices.contiguous();
  const auto tab = table.contiguous();
  const int64_t n = idx.size(0), slots = tab.size(0), choices = tab.size(1), metrics = tab.size(2);
  auto out = at::zeros({n, metrics}, tab.options());
  if (n == 0 || metrics == 0) return out;
  const int64_t* ip = idx.data_ptr<int64_t>();
  // Range check first, so a bad index raises before any work and never inside the parallel region.
  for (int64_t i = 0; i < n * slots; ++i) {
    TORCH_CHECK(ip[i] >= -1 && ip[i] < choices, "lut_sum: index ", ip[i], " at row ", i / slots, ", slot ",
                i % slots, " is out of range [-1, ", choices, ")");
  }
  AT_DISPATCH_FLOATING_TYPES(tab.scalar_type(), "lut_sum_cpu", [&] {
    const scalar_t* tp = tab.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        scalar_t* dst = op + row * metrics;
        const int64_t* code = ip + row * slots;
        for (int64_t s = 0; s < slots; ++s) {
          if (code[s] < 0) continue;
          const scalar_t* src = tp + (s * choices + code[s]) * metrics;
          for (int64_t m = 0; m < metrics; ++m) dst[m] += src[m];
        }
      }
    });
  });
  return out;
}

TORCH_LIBRARY(oneshot, m) {
  m.def("lut_sum(Tensor indices, Tensor table) -> Tensor");
}

TORCH_LIBRARY_IMPL(oneshot, CPU, m) {
  m.impl("lut_sum", &lut_sum_cpu);
}

}  // namespace oneshot

// Importing supernet._C from Python loads this library, which registers the ops above.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
