// elastic_batch_norm: batch norm over the leading C = x.size(1) channels of the largest layer's affine
// parameters and running statistics; in training the statistics of those channels are updated in place.
//
// The computation is at::batch_norm on narrowed views; as a C++ composite it is one dispatcher call where the
// Python layer would slice four tensors first, the overhead that dominates small layers at batch 1.
// CompositeImplicitAutograd: gradients come from at::batch_norm. The pure-PyTorch reference is
// supernet.kernels.elastic_batch_norm_reference.
#include <torch/library.h>
#include <torch/types.h>

#include <initializer_list>

namespace oneshot {
namespace {

at::Tensor elastic_batch_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                              at::Tensor& running_mean, at::Tensor& running_var, bool training, double momentum,
                              double eps) {
  TORCH_CHECK(x.dim() >= 2, "elastic_batch_norm: x must be at least 2-D [N, C, ...]");
  const int64_t c = x.size(1);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&weight, &bias, &running_mean, &running_var})
    TORCH_CHECK(t->dim() == 1 && t->size(0) >= c, "elastic_batch_norm: x has ", c,
                " channels, the layer's parameters and statistics fewer");
  return at::batch_norm(x, weight.narrow(0, 0, c), bias.narrow(0, 0, c), running_mean.narrow(0, 0, c),
                        running_var.narrow(0, 0, c), training, momentum, eps, /*cudnn_enabled=*/true);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(oneshot, m) {
  m.def("elastic_batch_norm(Tensor x, Tensor weight, Tensor bias, Tensor(a!) running_mean, "
        "Tensor(b!) running_var, bool training, float momentum, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(oneshot, CompositeImplicitAutograd, m) { m.impl("elastic_batch_norm", &elastic_batch_norm); }

}  // namespace oneshot
