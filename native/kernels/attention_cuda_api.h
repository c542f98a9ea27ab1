// Host entry point of the CUDA kernel (attention_cuda_kernel.cu), callable from the
// torch-facing attention_cuda.cpp without CUDA or torch types in the signature.
#pragma once

#include <cstdint>

#include "attention_params.h"

namespace torch_diffusion {
namespace kernels {

/** Returned when the kernel does not handle this call (caller falls back). */
constexpr int kAttnCudaUnsupported = -1;

/**
 * Launches the fused kernel on `stream` (a cudaStream_t) for Float16/BFloat16 inputs
 * with head_dim <= 256, q/k/v innermost stride 1, on compute capability >= 8.0.
 * `max_smem_optin` is cudaDeviceProp::sharedMemPerBlockOptin of the current device.
 * Requires q_len, kv_len, batch, heads >= 1. Returns 0 on success,
 * kAttnCudaUnsupported, or a cudaError_t value.
 */
int attention_cuda_launch(const AttentionParams& p, int sm_major, int64_t max_smem_optin, void* stream);

/** Message for a non-zero attention_cuda_launch() result. */
const char* attention_cuda_error_string(int code);

}  // namespace kernels
}  // namespace torch_diffusion
