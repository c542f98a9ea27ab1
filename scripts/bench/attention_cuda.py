"""torch_diffusion::attention on CUDA: our fused kernel against torch's SDPA and naive math.

Shapes are the attention calls of the models users bring (batch 2 = one image with
classifier-free guidance): SD 1.5 at 512 px (8 heads x 40, 4096 and 1024 tokens, 77 text
tokens), SD 1.5 at 768 px (9216 tokens), SDXL (10 / 20 heads x 64), DiT-XL/2 at 256 px
(16 x 72, 256 tokens, batch 32), with and without a padding mask. Each path is forced with
TORCH_DIFFUSION_CUDA_ATTENTION; "sdpa" is what auto picks on libtorch >= 2.1.

Reported: median of 30 timed calls (CUDA events, after 5 warm-ups), TFLOP/s
(4·B·H·N·M·D flops), and fused/sdpa (< 1 means ours is faster). Peak memory is
torch.cuda.max_memory_allocated growth during one call, output included.

Run:  python3 scripts/bench/attention_cuda.py [--dtype float16|bfloat16] [--json OUT]
"""

import argparse
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from test_attention_kernel import load_kernels  # noqa: E402  (builds the library when stale)

CASES = [
    # label, batch, heads, q_len, kv_len, head_dim, padding mask
    ("SD1.5 512 self 64x64", 2, 8, 4096, 4096, 40, False),
    ("SD1.5 512 cross 64x64", 2, 8, 4096, 77, 40, False),
    ("SD1.5 512 self 32x32", 2, 8, 1024, 1024, 80, False),
    ("SD1.5 768 self 96x96", 2, 8, 9216, 9216, 40, False),
    ("SDXL self 64x64", 2, 10, 4096, 4096, 64, False),
    ("SDXL self 32x32", 2, 20, 1024, 1024, 64, False),
    ("SDXL cross 64x64", 2, 10, 4096, 77, 64, False),
    ("DiT-XL/2 256", 32, 16, 256, 256, 72, False),
    ("SD1.5 cross, padding mask", 2, 8, 4096, 77, 40, True),
    ("SD1.5 self 32x32, mask", 2, 8, 1024, 1024, 80, True),
]
PATHS = ["fused", "sdpa", "math", "naive"]


def naive(q, k, v, mask):
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, -1) @ v


def call(path, q, k, v, mask):
    if path == "naive":
        return naive(q, k, v, mask)
    os.environ["TORCH_DIFFUSION_CUDA_ATTENTION"] = path
    return torch.ops.torch_diffusion.attention(q, k, v, None, mask)


def time_ms(fn, warmup=5, reps=30):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_mib(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del out
    return peak / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    ap.add_argument("--json")
    args = ap.parse_args()
    load_kernels()
    dtype = getattr(torch, args.dtype)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.dtype}")
    print(f"{'case':28s} " + " ".join(f"{p + ' ms':>9s}" for p in PATHS) + f" {'fused TF/s':>10s} {'fused/sdpa':>10s} {'MiB fused/sdpa/naive':>22s}")
    rows = []
    for label, b, h, n, m, d, masked in CASES:
        g = torch.Generator(device="cuda").manual_seed(0)
        q = torch.randn(b, h, n, d, device="cuda", generator=g, dtype=dtype)
        k = torch.randn(b, h, m, d, device="cuda", generator=g, dtype=dtype)
        v = torch.randn(b, h, m, d, device="cuda", generator=g, dtype=dtype)
        mask = (torch.arange(m, device="cuda") < m - m // 3).view(1, 1, 1, m).expand(b, 1, 1, m) if masked else None
        ms = {p: time_ms(lambda p=p: call(p, q, k, v, mask)) for p in PATHS}
        mem = {p: peak_mib(lambda p=p: call(p, q, k, v, mask)) for p in ["fused", "sdpa", "naive"]}
        tflops = 4 * b * h * n * m * d / (ms["fused"] * 1e-3) / 1e12
        ratio = ms["fused"] / ms["sdpa"]
        print(f"{label:28s} " + " ".join(f"{ms[p]:9.3f}" for p in PATHS) + f" {tflops:10.1f} {ratio:10.2f} "
              f"{mem['fused']:8.0f}/{mem['sdpa']:.0f}/{mem['naive']:.0f}")
        rows.append({"case": label, "shape": [b, h, n, m, d], "mask": masked, "ms": ms, "peakMiB": mem, "fusedTflops": tflops, "fusedOverSdpa": ratio})
    os.environ.pop("TORCH_DIFFUSION_CUDA_ATTENTION", None)
    ratios = [r["fusedOverSdpa"] for r in rows]
    print(f"median fused/sdpa {statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "dtype": args.dtype, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
