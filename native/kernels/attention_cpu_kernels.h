// Entry points of the CPU attention kernels, one per instruction set.
// attention_cpu.cpp picks one at run time (see select_cpu_kernel there).
#pragma once

#include "attention_params.h"

namespace torch_diffusion {
namespace kernels {

namespace generic {
/** Portable build (at::vec::Vectorized<float> at the addon's compile flags). */
void attention_forward(const AttentionParams& p);
}  // namespace generic

namespace avx2 {
/** True when this binary contains the AVX2 kernel and the running CPU has AVX2 + FMA. */
bool cpu_supported();
/** AVX2/FMA build; only call when cpu_supported(). */
void attention_forward(const AttentionParams& p);
}  // namespace avx2

namespace avx512 {
/** True when this binary contains the AVX-512 kernel and the running CPU has AVX-512F. */
bool cpu_supported();
/** AVX-512F build; only call when cpu_supported(). */
void attention_forward(const AttentionParams& p);
}  // namespace avx512

}  // namespace kernels
}  // namespace torch_diffusion
