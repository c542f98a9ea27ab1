// SIMD "ops" used by the CPU flash-attention kernel body (attention_cpu_kernel_impl.h).
//
// Two implementations with the same static interface:
//  - VecOpsATen: at::vec::Vectorized<float>. Portable (x86, ARM NEON, PowerPC, MSVC);
//    it is as wide as the flags the addon is compiled with (without
//    CPU_CAPABILITY_* defines it is a plain 8-float loop the compiler vectorizes).
//  - VecOpsAVX2 (attention_cpu_avx2.cpp only): raw AVX2/FMA intrinsics in functions
//    carrying __attribute__((target)), selected at run time when the CPU has AVX2.
//    We cannot build at::vec with CPU_CAPABILITY_AVX2 per file: it needs sleef.h,
//    which Debian's libtorch-dev does not ship, and compiling ATen headers with a
//    different target in one file risks ODR-mixed inline functions.
//
// exp2() assumes x <= 0 (scores minus the running row max) and returns exactly 0 for
// x < -126 (including -inf from masks). It is Cephes' exp2f polynomial: |rel err| < 2e-7.
#pragma once

#include <ATen/cpu/vec/vec.h>
#include <ATen/cpu/vec/functional.h>

#include <algorithm>

namespace torch_diffusion {
namespace kernels {

namespace exp2_coef {
constexpr float c0 = 1.535336188319500e-4f;
constexpr float c1 = 1.339887440266574e-3f;
constexpr float c2 = 9.618437357674640e-3f;
constexpr float c3 = 5.550332471162809e-2f;
constexpr float c4 = 2.402264791363012e-1f;
constexpr float c5 = 6.931472028550421e-1f;
}  // namespace exp2_coef

struct VecOpsATen {
  using V = at::vec::Vectorized<float>;
  static constexpr int W = static_cast<int>(V::size());
  static constexpr int kMR = 4, kNV = 2;  // 8 accumulators: fits SSE2 (x2 halves) and NEON register files
  static constexpr int64_t kBlockQ = 64, kBlockK = 8 * W;

  static inline V zero() { return V(0.f); }
  static inline V set1(float x) { return V(x); }
  static inline V load(const float* p) { return V::loadu(p); }
  static inline void store(float* p, const V& x) { x.store(p); }
  static inline V fma(const V& a, const V& b, const V& c) { return at::vec::fmadd(a, b, c); }
  static inline V add(const V& a, const V& b) { return a + b; }
  static inline V sub(const V& a, const V& b) { return a - b; }
  static inline V mul(const V& a, const V& b) { return a * b; }
  static inline V max(const V& a, const V& b) { return at::vec::maximum(a, b); }

  static inline V exp2(const V& xin) {
    using namespace exp2_coef;
    // Clamping at -127 makes the exponent field of 2^n zero, i.e. the result exactly 0.
    const V x = at::vec::maximum(xin, V(-127.f));
    const V n = x.round();
    const V f = x - n;  // [-0.5, 0.5]
    V p = at::vec::fmadd(V(c0), f, V(c1));
    p = at::vec::fmadd(p, f, V(c2));
    p = at::vec::fmadd(p, f, V(c3));
    p = at::vec::fmadd(p, f, V(c4));
    p = at::vec::fmadd(p, f, V(c5));
    const V r = at::vec::fmadd(p, f, V(1.f));  // 2^f = 1 + f*P(f)
    // 2^n built from its IEEE bits: ((n + 127) << 23) == (n + 127) * 2^23 as an integer.
    const V biased = (n + V(127.f)) * V(8388608.f);
    return r * at::vec::cast<float>(at::vec::convert_to_int_of_same_size(biased));
  }

  static inline float hmax(const V& x) {
    float t[W];
    x.store(t);
    float r = t[0];
    for (int i = 1; i < W; ++i) r = std::max(r, t[i]);
    return r;
  }
  static inline float hsum(const V& x) {
    float t[W];
    x.store(t);
    float r = 0.f;
    for (int i = 0; i < W; ++i) r += t[i];
    return r;
  }
};

}  // namespace kernels
}  // namespace torch_diffusion
