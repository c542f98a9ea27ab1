// Public C++ surface of the fused attention kernels, for the Node addon.
//
// The op is registered with the PyTorch dispatcher by static initializers in
// attention_ops.cpp (schema + Autograd), attention_cpu.cpp (CPU) and, in CUDA builds,
// attention_cuda.cpp (CUDA). Those object files must be linked into the addon as
// objects (add them as sources or an OBJECT library; a static archive would drop them
// because nothing references them). attention_kernels_linked() references all of
// them, so calling it once at addon start-up also keeps them in an archive build.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

namespace torch_diffusion {

/**
 * softmax(scale · q kᵀ + mask) v through the dispatcher (CPU, CUDA and autograd).
 * q [B, H, Q, D], k/v [B, H, K, D]; scale defaults to 1/sqrt(D); mask is bool
 * (True = attend) or additive float, broadcastable to [B, H, Q, K].
 */
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     c10::optional<double> scale = c10::nullopt,
                     const c10::optional<at::Tensor>& mask = c10::nullopt);

/** "avx512", "avx2" or "generic": which CPU kernel build runs here right now. */
const char* attention_cpu_kernel_name();

/** Always true; references every registering translation unit (see above). */
bool attention_kernels_linked();

namespace kernels {
// Defined in attention_cpu.cpp / attention_cuda.cpp; used by attention_kernels_linked().
bool attention_cpu_registered();
bool attention_cuda_registered();
}  // namespace kernels

}  // namespace torch_diffusion
