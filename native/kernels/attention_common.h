// Torch-facing helpers shared by the CPU, CUDA and autograd code of
// torch_diffusion::attention (no Node-API here: the addon calls the op through the
// dispatcher, or the functions below directly).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <tuple>

#include "attention_params.h"

namespace torch_diffusion {
namespace kernels {

/**
 * Validates the arguments of torch_diffusion::attention once, for every backend.
 * Throws c10::Error (TORCH_CHECK) whose message starts with
 * "torch_diffusion::attention:" and names the offending argument and shapes, because
 * these messages surface unchanged as JavaScript Errors.
 */
void check_attention_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const c10::optional<at::Tensor>& mask);

/** The softmax scale: `scale` if given, else 1/sqrt(head_dim). */
double resolve_scale(const at::Tensor& q, c10::optional<double> scale);

/**
 * The mask as a 4-D [batch, heads, q_len, kv_len] view (stride 0 on broadcast
 * dimensions, no copy of the expansion). Bool masks stay bool; additive masks are
 * converted to `additive_dtype` before the expansion. Undefined tensor when no mask.
 */
at::Tensor expand_mask(const c10::optional<at::Tensor>& mask, const at::Tensor& q, const at::Tensor& k,
                       at::ScalarType additive_dtype);

/** Fills the plain kernel parameters (pointers, sizes, element strides). */
AttentionParams make_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                            const at::Tensor& mask4d, double scale);

/**
 * Reference-quality attention with ATen ops, processed in chunks of query rows so the
 * score matrix never exceeds ~kMathChunkElements per chunk. Used for float64, as the
 * CUDA fallback, and as the recomputation in backward. Computes in float32 for
 * Half/BFloat16 (float64 for Double) and returns q's dtype. Fully masked rows give 0.
 * `mask4d` comes from expand_mask (any dtype; additive masks are cast as needed).
 */
at::Tensor attention_math(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                          const at::Tensor& mask4d);

/**
 * Gradients of attention w.r.t. q, k, v by recomputation (FlashAttention's backward
 * formulas, chunked over query rows like attention_math):
 *   P = softmax(scale·QKᵀ + mask), dV = Pᵀ dO, dP = dO Vᵀ,
 *   dS = P ∘ (dP − rowsum(dO ∘ O)), dQ = scale·dS K, dK = scale·dSᵀ Q.
 * `out` is the forward output. Device agnostic (runs on whatever device q is on).
 */
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_math(const at::Tensor& grad_out,
                                                                       const at::Tensor& q, const at::Tensor& k,
                                                                       const at::Tensor& v, const at::Tensor& out,
                                                                       double scale, const at::Tensor& mask4d);

/** Upper bound on the elements of one chunk's score matrix in the math path. */
constexpr int64_t kMathChunkElements = int64_t(1) << 24;

}  // namespace kernels
}  // namespace torch_diffusion
