// CUDA flash-attention forward for Float16 / BFloat16 on sm_80+ (FlashAttention-2
// scheme). Only CUDA headers and our plain headers: this file compiles with nvcc alone
// (scripts/check-cuda-compile.sh) and never sees libtorch.
//
// Per CTA: 64 query rows of one (batch, head), 4 warps x 16 rows. For each block of
// keys (loaded with the V block into shared memory):
//   S = Q Kᵀ         mma.sync m16n8k16 (f32 accumulate), S stays in registers
//   scale, mask, online softmax in base 2 (row max / sum reduced over the 4 lanes of
//   a quad with shuffles; the O accumulator is rescaled in registers)
//   O += P V         P reuses the S registers: the accumulator layout of two n8 tiles
//                    is exactly the A-operand layout of one k16 step
// Fragment layouts (PTX ISA, mma.m16n8k16, g = lane / 4, t = lane % 4):
//   A (16x16, row): regs {row g, cols 2t..2t+1}, {g+8, 2t}, {g, 2t+8}, {g+8, 2t+8}
//   B (16x8,  col): regs {k 2t..2t+1, n g}, {k 2t+8.., n g}
//   C (16x8, f32):  c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
// Loads are plain 32-bit shared-memory loads (no ldmatrix / cp.async pipelining):
// simpler to get right without a GPU at hand; see the path table in attention_cuda.cpp.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "attention_cuda_api.h"
#include "attention_cuda_traits.h"

namespace torch_diffusion {
namespace kernels {
namespace {

using namespace cuda_traits;

constexpr float kLog2e = 1.4426950408889634f;

template <typename T>
struct Elem;

template <>
struct Elem<__half> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);  // lo -> low 16 bits
    uint32_t r;
    memcpy(&r, &h, sizeof(r));
    return r;
  }
  static __device__ __forceinline__ uint16_t from_float(float x) {
    const __half h = __float2half_rn(x);
    uint16_t r;
    memcpy(&r, &h, sizeof(r));
    return r;
  }
  static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
  }
};

template <>
struct Elem<__nv_bfloat16> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);  // lo -> low 16 bits
    uint32_t r;
    memcpy(&r, &h, sizeof(r));
    return r;
  }
  static __device__ __forceinline__ uint16_t from_float(float x) {
    const __nv_bfloat16 h = __float2bfloat16_rn(x);
    uint16_t r;
    memcpy(&r, &h, sizeof(r));
    return r;
  }
  static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
  }
};

__device__ __forceinline__ uint32_t ld_u32(const uint16_t* p) { return *reinterpret_cast<const uint32_t*>(p); }

/**
 * Copies rows [row0, row0 + ROWS) x [0, D_PAD) of a [rows][head_dim] matrix into a
 * shared tile with row stride smem_ld(D_PAD), zero-filling rows >= nrows and
 * columns >= head_dim. vec8: 16-byte loads (head_dim % 8 == 0, aligned, stride_d 1).
 */
template <int ROWS, int D_PAD>
__device__ __forceinline__ void load_tile(uint16_t* dst, const uint16_t* src, int64_t row0, int64_t nrows,
                                          int64_t stride_row, int64_t stride_d, int64_t head_dim, bool vec8) {
  constexpr int LD = smem_ld(D_PAD);
  if (vec8) {
    constexpr int kChunks = D_PAD / 8;
    for (int idx = threadIdx.x; idx < ROWS * kChunks; idx += kThreads) {
      const int r = idx / kChunks, c = (idx % kChunks) * 8;
      const int64_t row = row0 + r;
      uint4 val = make_uint4(0u, 0u, 0u, 0u);
      if (row < nrows && c < head_dim) val = *reinterpret_cast<const uint4*>(src + row * stride_row + c);
      *reinterpret_cast<uint4*>(dst + r * LD + c) = val;
    }
  } else {
    for (int idx = threadIdx.x; idx < ROWS * D_PAD; idx += kThreads) {
      const int r = idx / D_PAD, c = idx % D_PAD;
      const int64_t row = row0 + r;
      dst[r * LD + c] = (row < nrows && c < head_dim) ? src[row * stride_row + c * stride_d] : uint16_t(0);
    }
  }
}

/** Adds the (log2-scaled) additive mask or applies the bool mask to one score. */
__device__ __forceinline__ float masked(const AttentionParams& p, int64_t b, int64_t h, int64_t i, int64_t j,
                                        float x) {
  const int64_t off = b * p.mask_stride[0] + h * p.mask_stride[1] + i * p.mask_stride[2] + j * p.mask_stride[3];
  if (p.mask_kind == AttnMaskKind::Additive) return x + static_cast<const float*>(p.mask)[off] * kLog2e;
  return static_cast<const uint8_t*>(p.mask)[off] ? x : -INFINITY;
}

template <typename T, int D_PAD>
__global__ void __launch_bounds__(kThreads) flash_fwd_kernel(const AttentionParams p, const bool vec8) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int BC = block_keys(D_PAD), LD = smem_ld(D_PAD);
  constexpr int NT_S = BC / 8, NT_O = D_PAD / 8, KS_D = D_PAD / 16, KS_C = BC / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  uint16_t* sQ = reinterpret_cast<uint16_t*>(smem_raw);
  uint16_t* sK = sQ + kBlockRows * LD;
  uint16_t* sV = sK + BC * LD;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t b = blockIdx.z, h = blockIdx.y, q0 = int64_t(blockIdx.x) * kBlockRows;
  const uint16_t* qg = static_cast<const uint16_t*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
  const uint16_t* kg = static_cast<const uint16_t*>(p.k) + b * p.k_stride[0] + h * p.k_stride[1];
  const uint16_t* vg = static_cast<const uint16_t*>(p.v) + b * p.v_stride[0] + h * p.v_stride[1];
  load_tile<kBlockRows, D_PAD>(sQ, qg, q0, p.q_len, p.q_stride[2], p.q_stride[3], p.head_dim, vec8);

  const int r_lo = warp * 16 + g;  // this thread's rows in the tile: r_lo and r_lo + 8
  const int64_t qrow[2] = {q0 + r_lo, q0 + r_lo + 8};
  const float scale_log2 = p.scale * kLog2e;
  float o[NT_O][4];
#pragma unroll
  for (int dt = 0; dt < NT_O; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.f, 0.f};  // per-thread partial sums, reduced over the quad at the end

  for (int64_t k0 = 0; k0 < p.kv_len; k0 += BC) {
    __syncthreads();  // previous K/V tile fully consumed (and sQ written on the first pass)
    load_tile<BC, D_PAD>(sK, kg, k0, p.kv_len, p.k_stride[2], p.k_stride[3], p.head_dim, vec8);
    load_tile<BC, D_PAD>(sV, vg, k0, p.kv_len, p.v_stride[2], p.v_stride[3], p.head_dim, vec8);
    __syncthreads();

    float s[NT_S][4];
#pragma unroll
    for (int nt = 0; nt < NT_S; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS_D; ++ks) {
      const uint16_t* qa = sQ + r_lo * LD + ks * 16 + t * 2;
      const uint32_t a[4] = {ld_u32(qa), ld_u32(qa + 8 * LD), ld_u32(qa + 8), ld_u32(qa + 8 * LD + 8)};
#pragma unroll
      for (int nt = 0; nt < NT_S; ++nt) {
        const uint16_t* kb = sK + (nt * 8 + g) * LD + ks * 16 + t * 2;
        Elem<T>::mma(s[nt], a, ld_u32(kb), ld_u32(kb + 8));
      }
    }

    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < NT_S; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        const int64_t key = k0 + nt * 8 + t * 2 + (e & 1);
        float x = s[nt][e] * scale_log2;
        if (key >= p.kv_len) {
          x = -INFINITY;
        } else if (p.mask_kind != AttnMaskKind::None && qrow[r] < p.q_len) {
          x = masked(p, b, h, qrow[r], key, x);
        }
        s[nt][e] = x;
        mx[r] = fmaxf(mx[r], x);
      }
    }
    float m_use[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(row_max[r], mx[r]);
      m_use[r] = m_new == -INFINITY ? 0.f : m_new;  // all keys masked so far: keep P = 0, no NaN
      const float alpha = exp2f(row_max[r] - m_use[r]);
      row_max[r] = m_new;
      row_sum[r] *= alpha;
#pragma unroll
      for (int dt = 0; dt < NT_O; ++dt) {
        o[dt][2 * r] *= alpha;
        o[dt][2 * r + 1] *= alpha;
      }
    }
#pragma unroll
    for (int nt = 0; nt < NT_S; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float pe = exp2f(s[nt][e] - m_use[e >> 1]);
        s[nt][e] = pe;
        row_sum[e >> 1] += pe;
      }
    }

#pragma unroll
    for (int kc = 0; kc < KS_C; ++kc) {
      const uint32_t a[4] = {Elem<T>::pack(s[2 * kc][0], s[2 * kc][1]), Elem<T>::pack(s[2 * kc][2], s[2 * kc][3]),
                             Elem<T>::pack(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                             Elem<T>::pack(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
      for (int dt = 0; dt < NT_O; ++dt) {
        const uint16_t* vb = sV + (kc * 16 + t * 2) * LD + dt * 8 + g;
        const uint32_t b0 = uint32_t(vb[0]) | (uint32_t(vb[LD]) << 16);
        const uint32_t b1 = uint32_t(vb[8 * LD]) | (uint32_t(vb[9 * LD]) << 16);
        Elem<T>::mma(o[dt], a, b0, b1);
      }
    }
  }

  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = row_sum[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[r] = l > 0.f ? 1.f / l : 0.f;  // fully masked rows -> 0
  }
  uint16_t* og = static_cast<uint16_t*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1];
#pragma unroll
  for (int dt = 0; dt < NT_O; ++dt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t row = qrow[e >> 1];
      const int col = dt * 8 + t * 2 + (e & 1);
      if (row < p.q_len && col < p.head_dim)
        og[row * p.out_stride[2] + col * p.out_stride[3]] = Elem<T>::from_float(o[dt][e] * inv[e >> 1]);
    }
  }
#endif
}

/** 16-byte global loads are valid: head_dim % 8 == 0, unit inner stride, aligned rows. */
bool can_use_vec8(const AttentionParams& p) {
  if (p.head_dim % 8 != 0) return false;
  const void* ptrs[3] = {p.q, p.k, p.v};
  const int64_t* strides[3] = {p.q_stride, p.k_stride, p.v_stride};
  for (int i = 0; i < 3; ++i) {
    if (reinterpret_cast<uintptr_t>(ptrs[i]) % 16 != 0 || strides[i][3] != 1) return false;
    for (int d = 0; d < 3; ++d)
      if (strides[i][d] % 8 != 0) return false;
  }
  return true;
}

template <typename T, int D_PAD>
int launch_bucket(const AttentionParams& p, int64_t max_smem_optin, cudaStream_t stream) {
  constexpr int64_t smem = smem_bytes(D_PAD);
  if (smem > max_smem_optin) return kAttnCudaUnsupported;
  auto kernel = &flash_fwd_kernel<T, D_PAD>;
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err != cudaSuccess) return int(err);
  }
  const dim3 grid(unsigned((p.q_len + kBlockRows - 1) / kBlockRows), unsigned(p.heads), unsigned(p.batch));
  kernel<<<grid, kThreads, size_t(smem), stream>>>(p, can_use_vec8(p));
  return int(cudaGetLastError());
}

template <typename T>
int launch_dtype(const AttentionParams& p, int64_t max_smem_optin, cudaStream_t stream) {
  switch (head_dim_bucket(p.head_dim)) {
    case 48: return launch_bucket<T, 48>(p, max_smem_optin, stream);
    case 64: return launch_bucket<T, 64>(p, max_smem_optin, stream);
    case 80: return launch_bucket<T, 80>(p, max_smem_optin, stream);
    case 128: return launch_bucket<T, 128>(p, max_smem_optin, stream);
    case 160: return launch_bucket<T, 160>(p, max_smem_optin, stream);
    case 256: return launch_bucket<T, 256>(p, max_smem_optin, stream);
    default: return kAttnCudaUnsupported;
  }
}

}  // namespace

int attention_cuda_launch(const AttentionParams& p, int sm_major, int64_t max_smem_optin, void* stream) {
  if (sm_major < 8 || p.dtype == AttnDType::Float32) return kAttnCudaUnsupported;
  if (p.q_stride[3] != 1 || p.k_stride[3] != 1 || p.v_stride[3] != 1) return kAttnCudaUnsupported;
  if (p.batch < 1 || p.heads < 1 || p.q_len < 1 || p.kv_len < 1) return kAttnCudaUnsupported;
  if (p.batch > 65535 || p.heads > 65535 || (p.q_len + kBlockRows - 1) / kBlockRows > 0x7fffffff)
    return kAttnCudaUnsupported;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  return p.dtype == AttnDType::Float16 ? launch_dtype<__half>(p, max_smem_optin, s)
                                       : launch_dtype<__nv_bfloat16>(p, max_smem_optin, s);
}

const char* attention_cuda_error_string(int code) {
  if (code == kAttnCudaUnsupported) return "configuration not supported by the fused CUDA kernel";
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}

}  // namespace kernels
}  // namespace torch_diffusion
