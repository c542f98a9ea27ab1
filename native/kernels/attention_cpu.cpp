// CPU implementation of torch_diffusion::attention: checks, float64 via the ATen math
// path, float32/Half/BFloat16 via the flash kernel (widest SIMD build the CPU has).
#include <torch/library.h>

#include <cstdlib>
#include <cstring>

#include "attention.h"
#include "attention_common.h"
#include "attention_cpu_kernels.h"

namespace torch_diffusion {
namespace kernels {
namespace {

enum class CpuKernel { Generic, Avx2, Avx512 };

/**
 * Widest build the CPU supports: AVX-512F, else AVX2+FMA, else the portable one.
 * TORCH_DIFFUSION_CPU_KERNEL=generic|avx2|avx512 caps the choice (read on every call
 * so tests and benchmarks can compare the builds in one process).
 */
CpuKernel select_cpu_kernel() {
  const char* forced = std::getenv("TORCH_DIFFUSION_CPU_KERNEL");
  CpuKernel cap = CpuKernel::Avx512;  // unset or unknown value: no cap
  if (forced != nullptr && std::strcmp(forced, "generic") == 0) cap = CpuKernel::Generic;
  if (forced != nullptr && std::strcmp(forced, "avx2") == 0) cap = CpuKernel::Avx2;
  if (cap == CpuKernel::Avx512 && avx512::cpu_supported()) return CpuKernel::Avx512;
  if (cap != CpuKernel::Generic && avx2::cpu_supported()) return CpuKernel::Avx2;
  return CpuKernel::Generic;
}

at::Tensor attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, c10::optional<double> scale,
                         const c10::optional<at::Tensor>& mask) {
  check_attention_inputs(q, k, v, mask);
  const double s = resolve_scale(q, scale);
  if (q.scalar_type() == at::kDouble) return attention_math(q, k, v, s, expand_mask(mask, q, k, at::kDouble));

  const at::Tensor mask4d = expand_mask(mask, q, k, at::kFloat);
  at::Tensor out = at::empty(q.sizes(), q.options());  // contiguous [B, H, Q, D], like the math reference
  if (out.numel() == 0) return out;
  if (k.size(2) == 0) return out.zero_();  // softmax over no keys: defined as zeros
  const AttentionParams p = make_params(q, k, v, out, mask4d, s);
  switch (select_cpu_kernel()) {
    case CpuKernel::Avx512: avx512::attention_forward(p); break;
    case CpuKernel::Avx2: avx2::attention_forward(p); break;
    case CpuKernel::Generic: generic::attention_forward(p); break;
  }
  return out;
}

}  // namespace

bool attention_cpu_registered() { return true; }

}  // namespace kernels

const char* attention_cpu_kernel_name() {
  switch (kernels::select_cpu_kernel()) {
    case kernels::CpuKernel::Avx512: return "avx512";
    case kernels::CpuKernel::Avx2: return "avx2";
    default: return "generic";
  }
}

}  // namespace torch_diffusion

TORCH_LIBRARY_IMPL(torch_diffusion, CPU, m) {
  m.impl("attention", TORCH_FN(torch_diffusion::kernels::attention_cpu));
}
