// AVX-512F instantiation of the CPU flash-attention kernel (see attention_cpu_kernel_impl.h).
// Same scheme as attention_cpu_avx2.cpp (read its header comment); 16 floats per vector.

#include "attention_cpu_kernels.h"

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) && \
    !defined(TORCH_DIFFUSION_NO_AVX512)

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <immintrin.h>

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's own _mm512_* headers trigger false -Wmaybe-uninitialized warnings when inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "attention_cpu_vec_ops.h"  // exp2 coefficients

#define TD_AVX512_ATTR __attribute__((target("avx512f")))

namespace torch_diffusion {
namespace kernels {
namespace {

/** Same interface as VecOpsATen, on __m512 (16 floats). */
struct VecOpsAVX512 {
  using V = __m512;
  static constexpr int W = 16;
  // Tiles: 6x4 vectors = 24 zmm accumulators of 32 registers; 72 query rows = 12 micro-rows.
  static constexpr int kMR = 6, kNV = 4;
  static constexpr int64_t kBlockQ = 72, kBlockK = 128;

  TD_AVX512_ATTR static inline V zero() { return _mm512_setzero_ps(); }
  TD_AVX512_ATTR static inline V set1(float x) { return _mm512_set1_ps(x); }
  TD_AVX512_ATTR static inline V load(const float* p) { return _mm512_loadu_ps(p); }
  TD_AVX512_ATTR static inline void store(float* p, V x) { _mm512_storeu_ps(p, x); }
  TD_AVX512_ATTR static inline V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  TD_AVX512_ATTR static inline V add(V a, V b) { return _mm512_add_ps(a, b); }
  TD_AVX512_ATTR static inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  TD_AVX512_ATTR static inline V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  TD_AVX512_ATTR static inline V max(V a, V b) { return _mm512_max_ps(a, b); }

  TD_AVX512_ATTR static inline V exp2(V x) {
    using namespace exp2_coef;
    x = _mm512_max_ps(_mm512_set1_ps(-127.f), x);  // 2^-127 -> exponent field 0 -> exactly 0
    const V n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const V f = _mm512_sub_ps(x, n);
    V p = _mm512_fmadd_ps(_mm512_set1_ps(c0), f, _mm512_set1_ps(c1));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c2));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c3));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c4));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c5));
    const V r = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(r, _mm512_castsi512_ps(e));
  }

  TD_AVX512_ATTR static inline float hmax(V x) { return _mm512_reduce_max_ps(x); }
  TD_AVX512_ATTR static inline float hsum(V x) { return _mm512_reduce_add_ps(x); }
};

}  // namespace
}  // namespace kernels
}  // namespace torch_diffusion

#define TD_KERNEL_NS avx512
#define TD_ATTR TD_AVX512_ATTR
#define TD_OPS ::torch_diffusion::kernels::VecOpsAVX512
#include "attention_cpu_kernel_impl.h"

namespace torch_diffusion {
namespace kernels {
namespace avx512 {
bool cpu_supported() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
}
}  // namespace avx512
}  // namespace kernels
}  // namespace torch_diffusion

#else  // no AVX-512 build on this compiler / architecture

namespace torch_diffusion {
namespace kernels {
namespace avx512 {
bool cpu_supported() { return false; }
void attention_forward(const AttentionParams&) {}
}  // namespace avx512
}  // namespace kernels
}  // namespace torch_diffusion

#endif
