// Portable instantiation of the CPU flash-attention kernel (see attention_cpu_kernel_impl.h).
#include "attention_cpu_kernels.h"
#include "attention_cpu_vec_ops.h"

#define TD_KERNEL_NS generic
#define TD_ATTR
#define TD_OPS ::torch_diffusion::kernels::VecOpsATen
#include "attention_cpu_kernel_impl.h"
