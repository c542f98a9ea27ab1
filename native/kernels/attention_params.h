// Plain description of one attention call, shared by the CPU and CUDA kernels.
//
// Why a plain struct: the CUDA kernel file (.cu) must compile with nvcc alone,
// without libtorch headers, and the CPU kernels should not depend on at::Tensor
// either (they are compiled several times for different instruction sets).
// The torch-facing code (attention_common.cpp) fills this from tensors.
#pragma once

#include <cstdint>

namespace torch_diffusion {
namespace kernels {

/** Element type of q, k, v and out (they always share one dtype). */
enum class AttnDType : int32_t { Float32 = 0, Float16 = 1, BFloat16 = 2 };

/**
 * How `mask` is interpreted.
 *  - None:     no mask.
 *  - Additive: float32 values added to the scaled scores (use -inf to drop a key).
 *  - Bool:     one byte per element, nonzero = keep the key (PyTorch SDPA semantics).
 */
enum class AttnMaskKind : int32_t { None = 0, Additive = 1, Bool = 2 };

/**
 * out[b,h,i,:] = softmax_j(scale * q[b,h,i,:]·k[b,h,j,:] + mask[b,h,i,j]) @ v[b,h,j,:]
 *
 * Strides are in elements, ordered [batch, heads, tokens, head_dim]. A mask that
 * broadcasts along a dimension has stride 0 there. Rows whose keys are all masked
 * out produce zeros (not NaN as the naive math would).
 */
struct AttentionParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  const void* mask = nullptr;  // float32 (Additive) or uint8/bool (Bool)

  int64_t batch = 0;
  int64_t heads = 0;
  int64_t q_len = 0;
  int64_t kv_len = 0;
  int64_t head_dim = 0;

  int64_t q_stride[4] = {0, 0, 0, 0};
  int64_t k_stride[4] = {0, 0, 0, 0};
  int64_t v_stride[4] = {0, 0, 0, 0};
  int64_t out_stride[4] = {0, 0, 0, 0};
  int64_t mask_stride[4] = {0, 0, 0, 0};

  float scale = 1.0f;
  AttnDType dtype = AttnDType::Float32;
  AttnMaskKind mask_kind = AttnMaskKind::None;
};

}  // namespace kernels
}  // namespace torch_diffusion
