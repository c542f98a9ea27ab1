// Tile configuration of the CUDA flash-attention kernel (attention_cuda_kernel.cu).
// Plain C++ so both nvcc and the host compiler can include it.
//
// One CTA = 4 warps = 64 query rows (16 per warp, one m16n8k16 MMA row block) of one
// (batch, head). Keys are streamed in blocks of kBlockKeys through shared memory.
// head_dim is padded up to a bucket (multiple of 16, the MMA k step); the bucket is a
// template parameter so the O accumulator (D_PAD/8 x 4 floats per thread) stays in
// registers. Shared memory: (64 + 2 * kBlockKeys) rows x (D_PAD + 8) halves; the +8
// halves of row padding make the 32-bit fragment loads bank-conflict free.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define TD_HOST_DEVICE __host__ __device__
#else
#define TD_HOST_DEVICE
#endif

namespace torch_diffusion {
namespace kernels {
namespace cuda_traits {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBlockRows = kWarps * 16;  // query rows per CTA
constexpr int kMaxHeadDim = 256;

/** Smallest supported padded head dim >= head_dim (0 when head_dim > kMaxHeadDim). */
TD_HOST_DEVICE constexpr int head_dim_bucket(int64_t head_dim) {
  return head_dim <= 48 ? 48
         : head_dim <= 64 ? 64
         : head_dim <= 80 ? 80
         : head_dim <= 128 ? 128
         : head_dim <= 160 ? 160
         : head_dim <= 256 ? 256
                           : 0;
}

/** Keys per shared-memory block: smaller for big head dims to bound registers and smem. */
TD_HOST_DEVICE constexpr int block_keys(int d_pad) { return d_pad <= 128 ? 64 : 32; }

/** Row stride of the shared-memory tiles, in 16-bit elements. */
TD_HOST_DEVICE constexpr int smem_ld(int d_pad) { return d_pad + 8; }

/** Dynamic shared memory of one CTA in bytes (D=128: 52 KB, D=256: 66 KB, others < 48 KB). */
TD_HOST_DEVICE constexpr int64_t smem_bytes(int d_pad) {
  return int64_t(kBlockRows + 2 * block_keys(d_pad)) * smem_ld(d_pad) * 2;
}

}  // namespace cuda_traits
}  // namespace kernels
}  // namespace torch_diffusion
