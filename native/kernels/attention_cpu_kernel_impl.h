// CPU flash-attention kernel body. NOT a normal header: it is included once per
// instruction set (attention_cpu_generic.cpp, _avx2.cpp, _avx512.cpp), each time with
//   TD_KERNEL_NS  a namespace name unique to that instruction set,
//   TD_ATTR       function attributes for the hot functions (e.g. target("avx2,fma")),
//   TD_OPS        the SIMD ops struct (see attention_cpu_vec_ops.h).
// Everything it defines lives in torch_diffusion::kernels::TD_KERNEL_NS, so the copies
// never collide (same idea as ATen's CPU_CAPABILITY namespaces).
//
// Algorithm (FlashAttention forward, adapted to CPU caches):
//  1. Pack K^T and V of a group of (batch, head) pairs into float32 tiles once
//     ([D][kBlockK] per key block, [keys][Dp] for V, Dp = head_dim rounded up to the
//     SIMD width). This also converts Half/BFloat16 and absorbs arbitrary strides.
//  2. In parallel over (batch, head, query block of kBlockQ rows): pack the query
//     block scaled by scale*log2(e), then for every key block
//       S = Qblk · Kblkᵀ   (register-blocked micro-kernel, kMR rows x up to kNV vectors)
//       + mask, online softmax in base 2 (running max m, running sum l, rescale O)
//       O += P · Vblk      (same micro-kernel shape)
//     and finally out = O / l. Extra memory: per-thread tiles plus the packed K/V of
//     one group of heads (capped at kPackBudgetBytes), never the [Q x K] scores.
#ifndef TD_KERNEL_NS
#error "define TD_KERNEL_NS, TD_ATTR and TD_OPS before including attention_cpu_kernel_impl.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "attention_params.h"

#if defined(__GNUC__) || defined(__clang__)
#define TD_UNROLL _Pragma("GCC unroll 16")
#else
#define TD_UNROLL
#endif

namespace torch_diffusion {
namespace kernels {
namespace TD_KERNEL_NS {

using Ops = TD_OPS;
using Vec = Ops::V;
constexpr int W = Ops::W;
// Tile shape, chosen per instruction set by the ops struct (see the .cpp files):
constexpr int kMR = Ops::kMR;              // micro-kernel rows (query rows / P rows)
constexpr int kNV = Ops::kNV;              // micro-kernel width in SIMD vectors
constexpr int64_t kBlockQ = Ops::kBlockQ;  // query rows per task
constexpr int64_t kBlockK = Ops::kBlockK;  // keys per tile
constexpr int64_t kPackBudgetBytes = int64_t(64) << 20;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
static_assert(kBlockK % W == 0, "key block must be a multiple of the SIMD width");
static_assert(kMR >= 2, "sweep_tail expects kMR >= 2");

/** s[MR x NV*W] = q[MR x depth] · kt[depth x NV*W]; kt rows are ldk apart. */
template <int MR, int NV>
TD_ATTR inline void micro_qk(const float* q, int64_t ldq, const float* kt, int64_t ldk,
                             int64_t depth, float* s, int64_t lds) {
  Vec acc[MR][NV];
  TD_UNROLL for (int r = 0; r < MR; ++r) TD_UNROLL for (int c = 0; c < NV; ++c) acc[r][c] = Ops::zero();
  for (int64_t d = 0; d < depth; ++d) {
    Vec b[NV];
    TD_UNROLL for (int c = 0; c < NV; ++c) b[c] = Ops::load(kt + d * ldk + c * W);
    TD_UNROLL for (int r = 0; r < MR; ++r) {
      const Vec a = Ops::set1(q[r * ldq + d]);
      TD_UNROLL for (int c = 0; c < NV; ++c) acc[r][c] = Ops::fma(a, b[c], acc[r][c]);
    }
  }
  TD_UNROLL for (int r = 0; r < MR; ++r) TD_UNROLL for (int c = 0; c < NV; ++c) Ops::store(s + r * lds + c * W, acc[r][c]);
}

/** o[MR x NV*W] += p[MR x depth] · v[depth x NV*W]; v rows are ldv apart. */
template <int MR, int NV>
TD_ATTR inline void micro_pv(const float* p, int64_t ldp, const float* v, int64_t ldv,
                             int64_t depth, float* o, int64_t ldo) {
  Vec acc[MR][NV];
  TD_UNROLL for (int r = 0; r < MR; ++r) TD_UNROLL for (int c = 0; c < NV; ++c) acc[r][c] = Ops::load(o + r * ldo + c * W);
  for (int64_t j = 0; j < depth; ++j) {
    Vec b[NV];
    TD_UNROLL for (int c = 0; c < NV; ++c) b[c] = Ops::load(v + j * ldv + c * W);
    TD_UNROLL for (int r = 0; r < MR; ++r) {
      const Vec a = Ops::set1(p[r * ldp + j]);
      TD_UNROLL for (int c = 0; c < NV; ++c) acc[r][c] = Ops::fma(a, b[c], acc[r][c]);
    }
  }
  TD_UNROLL for (int r = 0; r < MR; ++r) TD_UNROLL for (int c = 0; c < NV; ++c) Ops::store(o + r * ldo + c * W, acc[r][c]);
}

/** Calls the QK or PV micro-kernel with the runtime width nv (1..NV) as a template argument. */
template <int MR, int NV, bool QK>
TD_ATTR inline void micro(int64_t nv, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t depth,
                          float* c, int64_t ldc) {
  if constexpr (NV > 1) {
    if (nv < NV) return micro<MR, NV - 1, QK>(nv, a, lda, b, ldb, depth, c, ldc);
  }
  if constexpr (QK) {
    micro_qk<MR, NV>(a, lda, b, ldb, depth, c, ldc);
  } else {
    micro_pv<MR, NV>(a, lda, b, ldb, depth, c, ldc);
  }
}

/** Sweeps MR rows over `cols` columns (a multiple of W) in kNV-vector steps. */
template <int MR, bool QK>
TD_ATTR inline void sweep_cols(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t depth, float* c,
                               int64_t ldc, int64_t cols) {
  for (int64_t c0 = 0; c0 < cols; c0 += kNV * W) {
    const int64_t nv = std::min<int64_t>(kNV, (cols - c0) / W);
    micro<MR, kNV, QK>(nv, a, lda, b + c0, ldb, depth, c + c0, ldc);
  }
}

/** Row tail (rows < MR) with the row count as a template argument. */
template <int MR, bool QK>
TD_ATTR inline void sweep_tail(int64_t rows, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t depth,
                               float* c, int64_t ldc, int64_t cols) {
  if constexpr (MR > 1) {
    if (rows < MR) return sweep_tail<MR - 1, QK>(rows, a, lda, b, ldb, depth, c, ldc, cols);
  }
  sweep_cols<MR, QK>(a, lda, b, ldb, depth, c, ldc, cols);
}

/** C[rows x cols] (=|+=) A[rows x depth] · B[depth x cols], all row-major float. */
template <bool QK>
TD_ATTR inline void small_gemm(int64_t rows, const float* a, int64_t lda, const float* b, int64_t ldb,
                               int64_t depth, float* c, int64_t ldc, int64_t cols) {
  int64_t r0 = 0;
  for (; r0 + kMR <= rows; r0 += kMR) sweep_cols<kMR, QK>(a + r0 * lda, lda, b, ldb, depth, c + r0 * ldc, ldc, cols);
  if (r0 < rows) sweep_tail<kMR - 1, QK>(rows - r0, a + r0 * lda, lda, b, ldb, depth, c + r0 * ldc, ldc, cols);
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/** Geometry shared by the packing and the attention passes. */
struct Geometry {
  int64_t D, Dp, nkb, kt_floats, per_bh;  // per_bh: floats of packed K^T + V for one (b, h)
  explicit Geometry(const AttentionParams& p)
      : D(p.head_dim), Dp(round_up(p.head_dim, W)), nkb((p.kv_len + kBlockK - 1) / kBlockK),
        kt_floats(nkb * p.head_dim * kBlockK), per_bh(kt_floats + nkb * kBlockK * Dp) {}
};

/** Packs key block kb of (b, h): K^T tile [D][kBlockK] and V rows [kBlockK][Dp], zero padded. */
template <typename T>
TD_ATTR void pack_kv_block(const AttentionParams& p, const Geometry& g, int64_t b, int64_t h, int64_t kb,
                           float* packed) {
  const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + h * p.k_stride[1];
  const T* v = static_cast<const T*>(p.v) + b * p.v_stride[0] + h * p.v_stride[1];
  const int64_t j0 = kb * kBlockK, nk = std::min(kBlockK, p.kv_len - j0);
  float* kt = packed + kb * g.D * kBlockK;
  float* vp = packed + g.kt_floats + j0 * g.Dp;
  for (int64_t j = 0; j < kBlockK; ++j) {
    const bool valid = j < nk;
    const T* krow = k + (j0 + j) * p.k_stride[2];
    const T* vrow = v + (j0 + j) * p.v_stride[2];
    for (int64_t d = 0; d < g.D; ++d) {
      kt[d * kBlockK + j] = valid ? static_cast<float>(krow[d * p.k_stride[3]]) : 0.f;
      vp[j * g.Dp + d] = valid ? static_cast<float>(vrow[d * p.v_stride[3]]) : 0.f;
    }
    for (int64_t d = g.D; d < g.Dp; ++d) vp[j * g.Dp + d] = 0.f;
  }
}

/** Per-thread scratch: query tile, score tile, output accumulator, row max / sum. */
struct Workspace {
  std::vector<float> q, s, o, m, l;
  explicit Workspace(const Geometry& g)
      : q(kBlockQ * g.D), s(kBlockQ * kBlockK), o(kBlockQ * g.Dp), m(kBlockQ), l(kBlockQ) {}
};

/** Adds the mask of query row i for keys [j0, j0+nk) to a log2-domain score row. */
TD_ATTR inline void apply_mask_row(const AttentionParams& p, int64_t b, int64_t h, int64_t i, int64_t j0,
                                   int64_t nk, float* srow) {
  const int64_t* ms = p.mask_stride;
  const int64_t base = b * ms[0] + h * ms[1] + i * ms[2] + j0 * ms[3];
  if (p.mask_kind == AttnMaskKind::Additive) {
    const float* m = static_cast<const float*>(p.mask) + base;
    for (int64_t j = 0; j < nk; ++j) srow[j] += m[j * ms[3]] * kLog2e;
  } else {
    const uint8_t* m = static_cast<const uint8_t*>(p.mask) + base;
    for (int64_t j = 0; j < nk; ++j)
      if (!m[j * ms[3]]) srow[j] = kNegInf;
  }
}

/** Computes one query block of one (b, h) with the packed K/V of that (b, h). */
template <typename T>
TD_ATTR void attend_block(const AttentionParams& p, const Geometry& g, const float* packed, int64_t b,
                          int64_t h, int64_t qb, Workspace& ws) {
  const int64_t D = g.D, Dp = g.Dp;
  const int64_t i0 = qb * kBlockQ, nq = std::min(kBlockQ, p.q_len - i0);
  float* qp = ws.q.data();
  float* s = ws.s.data();
  float* o = ws.o.data();
  float* m = ws.m.data();
  float* l = ws.l.data();

  const float qscale = p.scale * kLog2e;  // scores live in the log2 domain: exp(x) = 2^(x*log2e)
  const T* q = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
  for (int64_t r = 0; r < nq; ++r) {
    const T* qrow = q + (i0 + r) * p.q_stride[2];
    for (int64_t d = 0; d < D; ++d) qp[r * D + d] = static_cast<float>(qrow[d * p.q_stride[3]]) * qscale;
    m[r] = kNegInf;
    l[r] = 0.f;
  }
  std::fill(o, o + nq * Dp, 0.f);

  for (int64_t kb = 0; kb < g.nkb; ++kb) {
    const int64_t j0 = kb * kBlockK, nk = std::min(kBlockK, p.kv_len - j0), nkp = round_up(nk, W);
    small_gemm<true>(nq, qp, D, packed + kb * D * kBlockK, kBlockK, D, s, kBlockK, nkp);

    for (int64_t r = 0; r < nq; ++r) {
      float* srow = s + r * kBlockK;
      if (p.mask_kind != AttnMaskKind::None) apply_mask_row(p, b, h, i0 + r, j0, nk, srow);
      for (int64_t j = nk; j < nkp; ++j) srow[j] = kNegInf;  // padded keys
      Vec vmax = Ops::set1(kNegInf);
      for (int64_t j = 0; j < nkp; j += W) vmax = Ops::max(vmax, Ops::load(srow + j));
      const float m_new = std::max(m[r], Ops::hmax(vmax));
      if (m_new == kNegInf) {  // every key so far is masked: contribute nothing
        std::fill(srow, srow + nkp, 0.f);
        continue;
      }
      const float alpha = std::exp2(m[r] - m_new);  // 0 when m[r] == -inf
      const Vec vm = Ops::set1(m_new);
      Vec vsum = Ops::zero();
      for (int64_t j = 0; j < nkp; j += W) {
        const Vec e = Ops::exp2(Ops::sub(Ops::load(srow + j), vm));
        Ops::store(srow + j, e);
        vsum = Ops::add(vsum, e);
      }
      l[r] = l[r] * alpha + Ops::hsum(vsum);
      m[r] = m_new;
      if (alpha != 1.f) {
        const Vec va = Ops::set1(alpha);
        float* orow = o + r * Dp;
        for (int64_t d = 0; d < Dp; d += W) Ops::store(orow + d, Ops::mul(Ops::load(orow + d), va));
      }
    }
    small_gemm<false>(nq, s, kBlockK, packed + g.kt_floats + j0 * Dp, Dp, nkp, o, Dp, Dp);
  }

  T* out = static_cast<T*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1];
  for (int64_t r = 0; r < nq; ++r) {
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;  // fully masked rows -> 0
    T* orow = out + (i0 + r) * p.out_stride[2];
    for (int64_t d = 0; d < D; ++d) orow[d * p.out_stride[3]] = static_cast<T>(o[r * Dp + d] * inv);
  }
}

/**
 * f(begin, end) over [0, n) on at::get_num_threads() threads. at::parallel_for is
 * header-only for libtorch's OpenMP backend and runs serially unless this file is
 * compiled with -fopenmp, which the addon's build may not use; without _OPENMP we
 * split the range over short-lived std::threads instead. `work` (flops) below
 * kSerialFlops runs serially: spawning threads costs more than tiny attentions.
 */
template <typename F>
void parallel_range(int64_t n, double work, const F& f) {
  constexpr double kSerialFlops = 4e6;
  if (n <= 0) return;
  if (work < kSerialFlops || at::in_parallel_region()) {
    f(int64_t(0), n);
    return;
  }
#if defined(_OPENMP)
  at::parallel_for(0, n, 1, f);
#else
  const int64_t threads = std::min<int64_t>(n, std::max(1, at::get_num_threads()));
  const int64_t chunk = (n + threads - 1) / threads;
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  for (int64_t t = 1; t < threads && t * chunk < n; ++t) {
    pool.emplace_back([&, t] {
      try {
        f(t * chunk, std::min(n, (t + 1) * chunk));
      } catch (...) {
        errors[t] = std::current_exception();
      }
    });
  }
  try {
    f(int64_t(0), std::min(n, chunk));
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
#endif
}

template <typename T>
void run(const AttentionParams& p) {
  const Geometry g(p);
  const int64_t BH = p.batch * p.heads;
  const int64_t nqb = (p.q_len + kBlockQ - 1) / kBlockQ;
  const int64_t bytes_per_bh = g.per_bh * static_cast<int64_t>(sizeof(float));
  const int64_t group = std::max<int64_t>(1, std::min<int64_t>(BH, kPackBudgetBytes / std::max<int64_t>(1, bytes_per_bh)));
  // Every element is written by pack_kv_block before use: no zero-initialisation.
  const std::unique_ptr<float[]> packed(new float[static_cast<size_t>(group * g.per_bh)]);

  for (int64_t g0 = 0; g0 < BH; g0 += group) {
    const int64_t ng = std::min(group, BH - g0);
    const double pack_work = double(ng) * double(g.nkb * kBlockK) * double(g.D) * 8.0;
    const double attn_work = 4.0 * double(ng) * double(p.q_len) * double(p.kv_len) * double(g.D);
    parallel_range(ng * g.nkb, pack_work, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t bh = g0 + t / g.nkb;
        pack_kv_block<T>(p, g, bh / p.heads, bh % p.heads, t % g.nkb, packed.get() + (t / g.nkb) * g.per_bh);
      }
    });
    parallel_range(ng * nqb, attn_work, [&](int64_t begin, int64_t end) {
      Workspace ws(g);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t bh = g0 + t / nqb;
        attend_block<T>(p, g, packed.get() + (t / nqb) * g.per_bh, bh / p.heads, bh % p.heads, t % nqb, ws);
      }
    });
  }
}

/** Entry point for this instruction set; sizes must be non-zero (the caller checks). */
void attention_forward(const AttentionParams& p) {
  switch (p.dtype) {
    case AttnDType::Float32: run<float>(p); break;
    case AttnDType::Float16: run<c10::Half>(p); break;
    case AttnDType::BFloat16: run<c10::BFloat16>(p); break;
  }
}

}  // namespace TD_KERNEL_NS
}  // namespace kernels
}  // namespace torch_diffusion

#undef TD_UNROLL
