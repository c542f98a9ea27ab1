// CUDA implementation of torch_diffusion::attention (compiled only when the found
// libtorch has CUDA; written against libtorch 1.13 and 2.x APIs that did not change:
// at::cuda::getCurrentCUDAStream, at::cuda::getCurrentDeviceProperties,
// c10::cuda::CUDAGuard, TORCH_VERSION_* from <torch/version.h>).
//
// Path chosen per call (TORCH_DIFFUSION_CUDA_ATTENTION = auto | fused | sdpa | math,
// default auto). "fused" is our kernel (attention_cuda_kernel.cu), "sdpa" is
// at::scaled_dot_product_attention (torch picks flash / memory-efficient / math),
// "math" is the chunked ATen path of attention_common.cpp.
//
//   libtorch  | dtype      | GPU      | mask | head_dim | auto picks
//   ----------+------------+----------+------+----------+-----------------------------
//   >= 2.1    | f16/bf16/f32 | any    | any  | any      | sdpa
//   2.0.x     | f16/bf16   | sm >= 80 | yes  | <= 256   | fused (2.0's SDPA runs masks in math)
//   2.0.x     | f16/bf16/f32 | other cases           | sdpa
//   1.x       | f16/bf16   | sm >= 80 | any  | <= 256   | fused
//   1.x       | f32, or sm < 80, or head_dim > 256   | math
//   any       | f64        |          |      |          | math
//
// Forced modes fall back to math when they cannot run (sdpa before 2.0; fused for f32,
// sm < 80 or head_dim > 256). SDPA is preferred where it exists: on an H100 with libtorch
// 2.11 its flash kernel was 2.5-4x faster than ours on self-attention (ldmatrix, cp.async
// pipelining), at the same accuracy; ours only won with a padding mask over 77 keys
// (scripts/bench/attention_cuda.py, README "On a GPU").
// Fully masked rows: fused and math give zeros; SDPA may give NaN.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>
#include <torch/version.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "attention.h"
#include "attention_common.h"
#include "attention_cuda_api.h"

#define TD_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace torch_diffusion {
namespace kernels {
namespace {

enum class CudaPath { Auto, Fused, Sdpa, Math };

CudaPath requested_path() {
  const char* env = std::getenv("TORCH_DIFFUSION_CUDA_ATTENTION");
  if (env == nullptr) return CudaPath::Auto;
  if (std::strcmp(env, "fused") == 0) return CudaPath::Fused;
  if (std::strcmp(env, "sdpa") == 0) return CudaPath::Sdpa;
  if (std::strcmp(env, "math") == 0) return CudaPath::Math;
  return CudaPath::Auto;
}

inline bool has_mask(const c10::optional<at::Tensor>& mask) { return mask.has_value() && mask->defined(); }

bool fused_eligible(const at::Tensor& q, const cudaDeviceProp& prop) {
  const auto t = q.scalar_type();
  return (t == at::kHalf || t == at::kBFloat16) && prop.major >= 8 && q.size(3) <= 256;
}

CudaPath choose_path(const at::Tensor& q, const c10::optional<at::Tensor>& mask, const cudaDeviceProp& prop) {
  if (q.scalar_type() == at::kDouble) return CudaPath::Math;
  const CudaPath forced = requested_path();
  if (forced == CudaPath::Math) return CudaPath::Math;
  if (forced == CudaPath::Fused) return fused_eligible(q, prop) ? CudaPath::Fused : CudaPath::Math;
  if (forced == CudaPath::Sdpa) return TORCH_VERSION_MAJOR >= 2 ? CudaPath::Sdpa : CudaPath::Math;
#if TD_TORCH_AT_LEAST(2, 1)
  (void)mask;
  return CudaPath::Sdpa;
#elif TORCH_VERSION_MAJOR == 2
  return has_mask(mask) && fused_eligible(q, prop) ? CudaPath::Fused : CudaPath::Sdpa;
#else
  (void)mask;
  return fused_eligible(q, prop) ? CudaPath::Fused : CudaPath::Math;
#endif
}

#if TORCH_VERSION_MAJOR >= 2
/**
 * t, or a contiguous copy when its rows are not 16-byte aligned: libtorch 2.11's SDPA returned
 * wrong float16 values (max error 3.7) for a view starting 2 bytes into its storage with rows of
 * 41 elements (measured on an H100, scripts/tests/test_attention_cuda.py).
 */
at::Tensor aligned_for_sdpa(const at::Tensor& t) {
  const int64_t item = static_cast<int64_t>(t.element_size());
  bool aligned = reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && t.stride(3) == 1;
  for (int d = 0; d < 3 && aligned; ++d) aligned = t.size(d) == 1 || (t.stride(d) * item) % 16 == 0;
  return aligned ? t : t.contiguous();
}
#endif

at::Tensor run_sdpa(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, double scale,
                    const c10::optional<at::Tensor>& mask) {
#if TORCH_VERSION_MAJOR >= 2
  const at::Tensor q = aligned_for_sdpa(q_in), k = aligned_for_sdpa(k_in), v = aligned_for_sdpa(v_in);
  c10::optional<at::Tensor> m;
  if (has_mask(mask)) m = mask->scalar_type() == at::kBool ? *mask : mask->to(q.scalar_type());
#if TD_TORCH_AT_LEAST(2, 1)
  return at::scaled_dot_product_attention(q, k, v, m, /*dropout_p=*/0.0, /*is_causal=*/false, scale);
#else
  // 2.0 has no scale argument: it always uses 1/sqrt(head_dim), so pre-scale q.
  const double implied = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  const at::Tensor qs = scale == implied ? q : q * (scale / implied);
  return at::scaled_dot_product_attention(qs, k, v, m, /*dropout_p=*/0.0, /*is_causal=*/false);
#endif
#else
  (void)q_in, (void)k_in, (void)v_in, (void)scale, (void)mask;
  TORCH_CHECK(false, "torch_diffusion::attention: internal error: SDPA needs libtorch >= 2.0");
#endif
}

/** Our kernel; undefined tensor when it declines the call (then math runs). */
at::Tensor run_fused(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                     const c10::optional<at::Tensor>& mask, const cudaDeviceProp& prop) {
  const auto inner_contiguous = [](const at::Tensor& t) { return t.stride(3) == 1 ? t : t.contiguous(); };
  const at::Tensor qc = inner_contiguous(q), kc = inner_contiguous(k), vc = inner_contiguous(v);
  const at::Tensor mask4d = expand_mask(mask, q, k, at::kFloat);
  at::Tensor out = at::empty(q.sizes(), q.options());
  const AttentionParams p = make_params(qc, kc, vc, out, mask4d, scale);
  // Temporaries (qc, mask4d) may be freed on return: the caching allocator only reuses
  // their memory in later work on this same stream, after the kernel.
  const int rc = attention_cuda_launch(p, prop.major, static_cast<int64_t>(prop.sharedMemPerBlockOptin),
                                       static_cast<void*>(at::cuda::getCurrentCUDAStream().stream()));
  if (rc == kAttnCudaUnsupported) return at::Tensor();
  TORCH_CHECK(rc == 0, "torch_diffusion::attention: CUDA kernel launch failed: ", attention_cuda_error_string(rc));
  return out;
}

at::Tensor attention_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, c10::optional<double> scale,
                          const c10::optional<at::Tensor>& mask) {
  check_attention_inputs(q, k, v, mask);
  const c10::cuda::CUDAGuard device_guard(q.device());
  const double s = resolve_scale(q, scale);
  if (q.numel() == 0) return at::empty(q.sizes(), q.options());
  if (k.size(2) == 0) return at::zeros(q.sizes(), q.options());

  const cudaDeviceProp& prop = *at::cuda::getCurrentDeviceProperties();
  switch (choose_path(q, mask, prop)) {
    case CudaPath::Sdpa:
      return run_sdpa(q, k, v, s, mask);
    case CudaPath::Fused: {
      at::Tensor out = run_fused(q, k, v, s, mask, prop);
      if (out.defined()) return out;
      break;
    }
    default:
      break;
  }
  const at::ScalarType additive = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return attention_math(q, k, v, s, expand_mask(mask, q, k, additive));
}

}  // namespace

bool attention_cuda_registered() { return true; }

}  // namespace kernels
}  // namespace torch_diffusion

TORCH_LIBRARY_IMPL(torch_diffusion, CUDA, m) {
  m.impl("attention", TORCH_FN(torch_diffusion::kernels::attention_cuda));
}
