"""Benchmark of torch_diffusion::attention (native/kernels/) against naive math attention
and, when this PyTorch has it, torch.nn.functional.scaled_dot_product_attention.

Shapes are Stable Diffusion's: batch 1, 8 heads, head dims 40/64/80/160, self-attention
over 4096 and 1024 tokens and cross-attention 4096 x 77 (text tokens).

Reported per case: median wall time, speed-up over naive, GFLOP/s (4·B·H·N·M·D flops per
forward) next to the machine's fp32 GEMM GFLOP/s: torch.mm 2048² (whatever BLAS this
libtorch links; Debian's is the netlib reference BLAS) and, when available, oneDNN's
matmul (a better estimate of what the cores can do); "% GEMM" uses the larger one.
Peak extra memory is the growth of the process's peak RSS (VmHWM, reset through
/proc/self/clear_refs) during one call after a warm-up call, measured in a fresh
subprocess per case with glibc's mmap threshold pinned at 128 KiB, so big buffers are
really returned between calls and show up again. It includes the output tensor.

Run:  python3 scripts/bench/attention.py [--quick] [--threads N] [--lib PATH]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_LIB = os.path.join(ROOT, "build", "kernels-python", "libtorch_diffusion_kernels.so")
HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


def load_lib(path):
    if not os.path.exists(path):
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "build_kernels_for_python.sh"), path], check=True,
                       env=dict(os.environ, PYTHON=sys.executable))
    torch.ops.load_library(path)


def naive(q, k, v):
    return torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5, dim=-1) @ v


def impl_fn(name):
    if name == "ours":
        return lambda q, k, v: torch.ops.torch_diffusion.attention(q, k, v, None, None)
    if name == "sdpa":
        return F.scaled_dot_product_attention
    return naive


def inputs(n, m, d, dtype, heads=8):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, heads, t, d, generator=g).to(dtype) for t in (n, m, m)]


def time_case(fn, args, min_reps=3, max_reps=15, budget_s=3.0):
    fn(*args)  # warm-up (thread pool, first-touch of buffers)
    times = []
    while len(times) < max_reps and (len(times) < min_reps or sum(times) < budget_s):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def gemm_gflops(size=2048, reps=5):
    """(torch.mm GFLOP/s, oneDNN matmul GFLOP/s or None)."""
    a, b = torch.randn(size, size), torch.randn(size, size)

    def rate(fn):
        fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return 2 * size ** 3 / statistics.median(times) / 1e9

    mm = rate(lambda: torch.mm(a, b))
    onednn = None
    try:
        if torch.backends.mkldnn.is_available():
            am, bm = a.to_mkldnn(), b.t().contiguous().to_mkldnn()  # linear computes a @ W^T
            onednn = rate(lambda: torch._C._nn.mkldnn_linear(am, bm, None))
    except (AttributeError, RuntimeError):
        onednn = None
    return mm, onednn


def cpu_kernel_label():
    forced = os.environ.get("TORCH_DIFFUSION_CPU_KERNEL")
    flags = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    best = "avx512" if " avx512f" in flags else "avx2" if " avx2" in flags and " fma" in flags else "generic"
    return f"{best} (capped by TORCH_DIFFUSION_CPU_KERNEL={forced})" if forced else best


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field + " not in /proc/self/status")


def memory_child(spec):
    """Runs in a subprocess: peak RSS growth (bytes) of one call after one warm-up call."""
    torch.set_num_threads(spec["threads"])
    if spec["impl"] == "ours":
        torch.ops.load_library(spec["lib"])
    dtype = getattr(torch, spec["dtype"])
    args = inputs(spec["n"], spec["m"], spec["d"], dtype)
    fn = impl_fn(spec["impl"])
    fn(*args)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    base = _status_kb("VmRSS")
    out = fn(*args)
    peak = _status_kb("VmHWM")
    del out
    print(json.dumps({"extra_bytes": (peak - base) * 1024}))


def measure_memory(spec):
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    res = subprocess.run([sys.executable, __file__, "--memory-child", json.dumps(spec)], capture_output=True,
                         text=True, env=env)
    if res.returncode != 0:
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])["extra_bytes"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default=os.environ.get("TORCH_DIFFUSION_KERNELS_LIB", DEFAULT_LIB))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--quick", action="store_true", help="head dims 64 and 160 only, no memory runs")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return

    torch.set_num_threads(args.threads)
    load_lib(args.lib)
    mm, onednn = gemm_gflops()
    gemm = max(mm, onednn or 0.0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, SDPA {'yes' if HAS_SDPA else 'no'}, "
          f"CPU kernel {cpu_kernel_label()}, load average {load:.1f}")
    print(f"machine fp32 GEMM 2048x2048: torch.mm {mm:.1f} GFLOP/s, oneDNN "
          f"{f'{onednn:.1f} GFLOP/s' if onednn else 'n/a'}\n")

    dims = [64, 160] if args.quick else [40, 64, 80, 160]
    shapes = [("self 4096", 4096, 4096), ("self 1024", 1024, 1024), ("cross 4096x77", 4096, 77)]
    impls = [("naive", "float32"), ("ours", "float32"), ("ours", "bfloat16")]
    if HAS_SDPA:
        impls.insert(2, ("sdpa", "float32"))
    header = f"{'case':<15}{'D':>4}  {'impl':<6}{'dtype':<9}{'median ms':>11}{'vs naive':>10}{'GFLOP/s':>9}" \
             f"{'% GEMM':>8}{'extra MB':>10}"
    print(header)
    print("-" * len(header))
    for label, n, m in shapes:
        for d in dims:
            flops = 4 * 8 * n * m * d
            naive_t = None
            for impl, dtype in impls:
                q, k, v = inputs(n, m, d, getattr(torch, dtype))
                t, _ = time_case(impl_fn(impl), (q, k, v))
                if impl == "naive":
                    naive_t = t
                mem = None
                if not (args.quick or args.no_memory):
                    mem = measure_memory({"impl": impl, "dtype": dtype, "n": n, "m": m, "d": d, "lib": args.lib,
                                          "threads": args.threads})
                gf = flops / t / 1e9
                mem_s = f"{mem / 2**20:10.1f}" if mem is not None else f"{'-':>10}"
                print(f"{label:<15}{d:>4}  {impl:<6}{dtype:<9}{t * 1e3:11.1f}{naive_t / t:9.1f}x{gf:9.1f}"
                      f"{100 * gf / gemm:7.0f}%{mem_s}", flush=True)


if __name__ == "__main__":
    main()
