// Shared torch-facing helpers of torch_diffusion::attention: argument checks, mask
// expansion, kernel parameters and the chunked ATen math path (forward + backward).
#include "attention_common.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace torch_diffusion {
namespace kernels {

namespace {
constexpr const char* kOp = "torch_diffusion::attention: ";

bool is_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble;
}

AttnDType to_attn_dtype(at::ScalarType t) {
  if (t == at::kHalf) return AttnDType::Float16;
  if (t == at::kBFloat16) return AttnDType::BFloat16;
  TORCH_CHECK(t == at::kFloat, kOp, "the fused kernels support Float, Half and BFloat16, got ", t);
  return AttnDType::Float32;
}

void copy_strides(const at::Tensor& t, int64_t (&dst)[4]) {
  for (int i = 0; i < 4; ++i) dst[i] = t.stride(i);
}

/** softmax(scale·q kᵀ + mask) over the last dim; rows with every key masked become 0. */
at::Tensor attention_probs(const at::Tensor& qc, const at::Tensor& kT, double scale, const at::Tensor& mask_c) {
  at::Tensor s = at::matmul(qc, kT).mul_(scale);
  if (!mask_c.defined()) return at::softmax(s, -1);
  if (mask_c.scalar_type() == at::kBool) {
    s.masked_fill_(mask_c.logical_not(), -std::numeric_limits<double>::infinity());
  } else {
    s.add_(mask_c.to(s.scalar_type()));
  }
  at::Tensor p = at::softmax(s, -1);
  const at::Tensor dead = std::get<0>(s.max(-1, /*keepdim=*/true)) == -std::numeric_limits<double>::infinity();
  return p.masked_fill_(dead, 0.0);
}

int64_t math_chunk_rows(const at::Tensor& q, const at::Tensor& k) {
  const int64_t per_row = std::max<int64_t>(1, q.size(0) * q.size(1) * k.size(2));
  return std::max<int64_t>(1, std::min<int64_t>(q.size(2), kMathChunkElements / per_row));
}

at::ScalarType compute_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}
}  // namespace

void check_attention_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const c10::optional<at::Tensor>& mask) {
  TORCH_CHECK(q.defined() && k.defined() && v.defined(), kOp, "q, k and v must be defined tensors");
  const std::pair<const char*, const at::Tensor*> args[] = {{"q", &q}, {"k", &k}, {"v", &v}};
  for (const auto& a : args) {
    TORCH_CHECK(a.second->dim() == 4, kOp, "expected ", a.first,
                " to be a 4-D tensor [batch, heads, tokens, head_dim] but got shape ", a.second->sizes());
  }
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), kOp,
              "expected q, k, v to have the same dtype but got q ", q.scalar_type(), ", k ", k.scalar_type(),
              ", v ", v.scalar_type());
  TORCH_CHECK(is_supported_dtype(q.scalar_type()), kOp,
              "expected q, k, v to be Float, Half, BFloat16 or Double but got ", q.scalar_type());
  TORCH_CHECK(q.device() == k.device() && q.device() == v.device(), kOp,
              "expected q, k, v to be on the same device but got q ", q.device(), ", k ", k.device(), ", v ",
              v.device());
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(0) == v.size(0) && q.size(1) == k.size(1) && q.size(1) == v.size(1),
              kOp, "expected q, k, v to have the same batch and heads (dims 0 and 1) but got q ", q.sizes(), ", k ",
              k.sizes(), ", v ", v.sizes());
  TORCH_CHECK(q.size(3) == k.size(3), kOp, "expected q and k to have the same head_dim (dim 3) but got q ",
              q.sizes(), " and k ", k.sizes());
  TORCH_CHECK(v.size(3) == q.size(3), kOp, "expected v to have the same head_dim (dim 3) as q but got q ",
              q.sizes(), " and v ", v.sizes());
  TORCH_CHECK(k.size(2) == v.size(2), kOp, "expected k and v to have the same number of tokens (dim 2) but got k ",
              k.sizes(), " and v ", v.sizes());
  if (!mask.has_value() || !mask->defined()) return;
  const at::Tensor& m = *mask;
  TORCH_CHECK(m.device() == q.device(), kOp, "expected mask to be on the same device as q (", q.device(),
              ") but got ", m.device());
  TORCH_CHECK(m.scalar_type() == at::kBool || at::isFloatingType(m.scalar_type()), kOp,
              "expected mask to be bool (True = attend) or a floating point additive mask but got ",
              m.scalar_type());
  const int64_t target[4] = {q.size(0), q.size(1), q.size(2), k.size(2)};
  bool ok = m.dim() <= 4;
  for (int64_t i = 0; ok && i < m.dim(); ++i) {
    const int64_t size = m.size(m.dim() - 1 - i), want = target[3 - i];
    ok = size == want || size == 1;
  }
  TORCH_CHECK(ok, kOp, "expected mask of shape ", m.sizes(),
              " to be broadcastable to [batch, heads, q_len, kv_len] = ", at::IntArrayRef(target, 4));
}

double resolve_scale(const at::Tensor& q, c10::optional<double> scale) {
  if (scale.has_value()) return *scale;
  const int64_t d = q.size(3);
  return d > 0 ? 1.0 / std::sqrt(static_cast<double>(d)) : 1.0;
}

at::Tensor expand_mask(const c10::optional<at::Tensor>& mask, const at::Tensor& q, const at::Tensor& k,
                       at::ScalarType additive_dtype) {
  if (!mask.has_value() || !mask->defined()) return at::Tensor();
  at::Tensor m = *mask;
  if (m.scalar_type() != at::kBool && m.scalar_type() != additive_dtype) m = m.to(additive_dtype);
  return m.expand({q.size(0), q.size(1), q.size(2), k.size(2)});
}

AttentionParams make_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                            const at::Tensor& mask4d, double scale) {
  AttentionParams p;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.out = out.data_ptr();
  p.batch = q.size(0);
  p.heads = q.size(1);
  p.q_len = q.size(2);
  p.kv_len = k.size(2);
  p.head_dim = q.size(3);
  copy_strides(q, p.q_stride);
  copy_strides(k, p.k_stride);
  copy_strides(v, p.v_stride);
  copy_strides(out, p.out_stride);
  p.scale = static_cast<float>(scale);
  p.dtype = to_attn_dtype(q.scalar_type());
  if (mask4d.defined()) {
    TORCH_CHECK(mask4d.scalar_type() == at::kBool || mask4d.scalar_type() == at::kFloat, kOp,
                "internal: kernel masks must be bool or float32");
    p.mask = mask4d.data_ptr();
    p.mask_kind = mask4d.scalar_type() == at::kBool ? AttnMaskKind::Bool : AttnMaskKind::Additive;
    copy_strides(mask4d, p.mask_stride);
  }
  return p;
}

at::Tensor attention_math(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                          const at::Tensor& mask4d) {
  at::Tensor out = at::empty(q.sizes(), q.options());
  if (out.numel() == 0) return out;
  if (k.size(2) == 0) return out.zero_();
  const auto cdt = compute_dtype(q);
  const at::Tensor kT = k.to(cdt).transpose(-2, -1);
  const at::Tensor vc = v.to(cdt);
  const int64_t chunk = math_chunk_rows(q, k);
  for (int64_t i0 = 0; i0 < q.size(2); i0 += chunk) {
    const int64_t c = std::min(chunk, q.size(2) - i0);
    const at::Tensor p = attention_probs(q.narrow(2, i0, c).to(cdt), kT, scale,
                                         mask4d.defined() ? mask4d.narrow(2, i0, c) : at::Tensor());
    out.narrow(2, i0, c).copy_(at::matmul(p, vc));
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_math(const at::Tensor& grad_out,
                                                                       const at::Tensor& q, const at::Tensor& k,
                                                                       const at::Tensor& v, const at::Tensor& out,
                                                                       double scale, const at::Tensor& mask4d) {
  if (!grad_out.defined()) return std::make_tuple(at::Tensor(), at::Tensor(), at::Tensor());
  const auto cdt = compute_dtype(q);
  const at::Tensor qf = q.to(cdt), kf = k.to(cdt), vf = v.to(cdt), go = grad_out.to(cdt);
  at::Tensor dq = at::zeros(qf.sizes(), qf.options());
  at::Tensor dk = at::zeros(kf.sizes(), kf.options());
  at::Tensor dv = at::zeros(vf.sizes(), vf.options());
  if (q.numel() > 0 && k.numel() > 0) {
    const at::Tensor delta = (go * out.to(cdt)).sum(-1, /*keepdim=*/true);  // rowsum(dO ∘ O)
    const at::Tensor kT = kf.transpose(-2, -1), vT = vf.transpose(-2, -1);
    const int64_t chunk = math_chunk_rows(q, k);
    for (int64_t i0 = 0; i0 < q.size(2); i0 += chunk) {
      const int64_t c = std::min(chunk, q.size(2) - i0);
      const at::Tensor qc = qf.narrow(2, i0, c), goc = go.narrow(2, i0, c);
      const at::Tensor p = attention_probs(qc, kT, scale, mask4d.defined() ? mask4d.narrow(2, i0, c) : at::Tensor());
      dv.add_(at::matmul(p.transpose(-2, -1), goc));
      const at::Tensor ds = at::matmul(goc, vT).sub_(delta.narrow(2, i0, c)).mul_(p);
      dq.narrow(2, i0, c).copy_(at::matmul(ds, kf).mul_(scale));
      dk.add_(at::matmul(ds.transpose(-2, -1), qc).mul_(scale));
    }
  }
  return std::make_tuple(dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type()));
}

}  // namespace kernels
}  // namespace torch_diffusion
