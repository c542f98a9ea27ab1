// AVX2/FMA instantiation of the CPU flash-attention kernel (see attention_cpu_kernel_impl.h).
//
// Why function attributes instead of -mavx2 for this file: the addon's build flags are
// generic (the binary must run on any x86-64), and at::vec's own AVX2 path needs sleef.h
// (absent from Debian's libtorch-dev). Only functions defined below carry
// target("avx2,fma"); headers keep the baseline target, so no inline function from
// c10/ATen/std is emitted with AVX2 code. The kernel is used only if the CPU reports
// AVX2 and FMA (avx2::cpu_supported), otherwise the generic build runs.
#include "attention_cpu_kernels.h"

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) && \
    !defined(TORCH_DIFFUSION_NO_AVX2)

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <immintrin.h>

#include "attention_cpu_vec_ops.h"  // exp2 coefficients

#define TD_AVX2_ATTR __attribute__((target("avx2,fma")))

namespace torch_diffusion {
namespace kernels {
namespace {

/** Same interface as VecOpsATen, on __m256 (8 floats). */
struct VecOpsAVX2 {
  using V = __m256;
  static constexpr int W = 8;
  // Tiles: 4x3 vectors = 12 ymm accumulators + 3 loads + 1 broadcast of 16 registers.
  static constexpr int kMR = 4, kNV = 3;
  static constexpr int64_t kBlockQ = 64, kBlockK = 96;

  TD_AVX2_ATTR static inline V zero() { return _mm256_setzero_ps(); }
  TD_AVX2_ATTR static inline V set1(float x) { return _mm256_set1_ps(x); }
  TD_AVX2_ATTR static inline V load(const float* p) { return _mm256_loadu_ps(p); }
  TD_AVX2_ATTR static inline void store(float* p, V x) { _mm256_storeu_ps(p, x); }
  TD_AVX2_ATTR static inline V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  TD_AVX2_ATTR static inline V add(V a, V b) { return _mm256_add_ps(a, b); }
  TD_AVX2_ATTR static inline V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  TD_AVX2_ATTR static inline V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  TD_AVX2_ATTR static inline V max(V a, V b) { return _mm256_max_ps(a, b); }

  TD_AVX2_ATTR static inline V exp2(V x) {
    using namespace exp2_coef;
    x = _mm256_max_ps(_mm256_set1_ps(-127.f), x);  // 2^-127 -> exponent field 0 -> exactly 0
    const V n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const V f = _mm256_sub_ps(x, n);
    V p = _mm256_fmadd_ps(_mm256_set1_ps(c0), f, _mm256_set1_ps(c1));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c2));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c3));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c4));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c5));
    const V r = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(r, _mm256_castsi256_ps(e));
  }

  TD_AVX2_ATTR static inline float hmax(V x) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
  }
  TD_AVX2_ATTR static inline float hsum(V x) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
};

}  // namespace
}  // namespace kernels
}  // namespace torch_diffusion

#define TD_KERNEL_NS avx2
#define TD_ATTR TD_AVX2_ATTR
#define TD_OPS ::torch_diffusion::kernels::VecOpsAVX2
#include "attention_cpu_kernel_impl.h"

namespace torch_diffusion {
namespace kernels {
namespace avx2 {
bool cpu_supported() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
}  // namespace avx2
}  // namespace kernels
}  // namespace torch_diffusion

#else  // no AVX2 build on this compiler / architecture

namespace torch_diffusion {
namespace kernels {
namespace avx2 {
bool cpu_supported() { return false; }
void attention_forward(const AttentionParams&) {}
}  // namespace avx2
}  // namespace kernels
}  // namespace torch_diffusion

#endif
