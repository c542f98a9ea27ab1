// Schema and autograd of torch_diffusion::attention. This is the only
// TORCH_LIBRARY(torch_diffusion, ...) block of the project: other ops in the
// namespace must use TORCH_LIBRARY_FRAGMENT(torch_diffusion, m).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "attention.h"
#include "attention_common.h"

namespace torch_diffusion {
namespace {

using AttentionSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, c10::optional<double>,
                                const c10::optional<at::Tensor>&);

c10::TypedOperatorHandle<AttentionSig> attention_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("torch_diffusion::attention", "").typed<AttentionSig>();
  return op;
}

/**
 * Forward runs the backend kernel below autograd and saves q, k, v, out, mask;
 * backward recomputes the probabilities chunk by chunk (attention_backward_math), so
 * neither pass keeps a [Q x K] matrix alive between forward and backward.
 * The mask gets no gradient.
 */
struct AttentionFunction : public torch::autograd::Function<AttentionFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, c10::optional<double> scale, const c10::optional<at::Tensor>& mask) {
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      out = attention_op().call(q, k, v, scale, mask);
    }
    const at::Tensor m = mask.has_value() ? *mask : at::Tensor();
    ctx->save_for_backward({q, k, v, out, m});
    ctx->saved_data["scale"] = kernels::resolve_scale(q, scale);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &m = saved[4];
    const double scale = ctx->saved_data["scale"].toDouble();
    const at::Tensor mask4d =
        kernels::expand_mask(m.defined() ? c10::optional<at::Tensor>(m) : c10::nullopt, q, k,
                             q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
    auto g = kernels::attention_backward_math(grads[0], q, k, v, out, scale, mask4d);
    return {std::get<0>(g), std::get<1>(g), std::get<2>(g), at::Tensor(), at::Tensor()};
  }
};

at::Tensor attention_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              c10::optional<double> scale, const c10::optional<at::Tensor>& mask) {
  return AttentionFunction::apply(q, k, v, scale, mask);
}

}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, c10::optional<double> scale,
                     const c10::optional<at::Tensor>& mask) {
  return attention_op().call(q, k, v, scale, mask);
}

bool attention_kernels_linked() {
  bool ok = kernels::attention_cpu_registered();
#ifdef TORCH_DIFFUSION_WITH_CUDA
  ok = ok && kernels::attention_cuda_registered();
#endif
  return ok;
}

}  // namespace torch_diffusion

TORCH_LIBRARY(torch_diffusion, m) {
  m.def("attention(Tensor q, Tensor k, Tensor v, float? scale=None, Tensor? mask=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(torch_diffusion, Autograd, m) {
  m.impl("attention", TORCH_FN(torch_diffusion::attention_autograd));
}
