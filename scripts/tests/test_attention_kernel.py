"""Tests of torch_diffusion::attention (native/kernels/) through PyTorch's dispatcher.

The kernels are built into a plain shared library (scripts/build_kernels_for_python.sh)
and loaded with torch.ops.load_library, so they can be tested without the Node addon.

Run:  python3 -m unittest discover -s scripts/tests -v
Env:  TORCH_DIFFUSION_KERNELS_LIB=/path/lib.so  use a prebuilt library instead of building.
"""

import contextlib
import os
import random
import subprocess
import sys
import unittest

try:
    import torch
except ImportError:  # pragma: no cover - depends on the machine
    torch = None

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KERNEL_DIR = os.path.join(ROOT, "native", "kernels")
DEFAULT_LIB = os.path.join(ROOT, "build", "kernels-python", "libtorch_diffusion_kernels.so")
HEAD_DIMS = [40, 64, 72, 80, 128, 160]


def _stale(lib):
    if not os.path.exists(lib):
        return True
    built = os.path.getmtime(lib)
    return any(os.path.getmtime(os.path.join(KERNEL_DIR, f)) > built for f in os.listdir(KERNEL_DIR))


_LOADED = []


def load_kernels():
    """Builds (if needed) and loads the kernel library once per process.

    Called at import time: unittest discover imports this module before the other test
    modules, and scripts/torch_diffusion_models registers a pure-Python
    torch_diffusion::attention when none exists yet; loading ours first makes those
    modules use the native op instead of shadowing it.
    """
    if _LOADED:
        return _LOADED[0]
    lib = os.environ.get("TORCH_DIFFUSION_KERNELS_LIB")
    if not lib:
        lib = DEFAULT_LIB
        if _stale(lib):
            subprocess.run(
                ["bash", os.path.join(ROOT, "scripts", "build_kernels_for_python.sh"), lib],
                check=True,
                env=dict(os.environ, PYTHON=sys.executable),
            )
    # Raises if another library already defined the torch_diffusion namespace.
    torch.ops.load_library(lib)
    _LOADED.append(torch.ops.torch_diffusion.attention)
    return _LOADED[0]


if torch is not None:
    load_kernels()


def reference(q, k, v, scale=None, mask=None):
    """softmax(q kᵀ·scale + mask) v in float64 with plain ATen ops."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.double()
    return torch.softmax(s, -1) @ v.double()


def rel_err(out, ref):
    """max |out - ref| / max(1, |ref|)."""
    return ((out.double() - ref).abs() / ref.abs().clamp(min=1.0)).max().item()


def kernel_variants():
    """CPU builds to exercise (TORCH_DIFFUSION_CPU_KERNEL caps the widest build used):
    default = widest the CPU has (AVX-512 / AVX2), then AVX2, then the portable one."""
    return ["default", "avx2", "generic"]


@contextlib.contextmanager
def env_var(name, value):
    """Sets (or, with None, unsets) environment variable `name` inside the block, then restores it.
    The kernels read their switches per call (TORCH_DIFFUSION_CPU_KERNEL, TORCH_DIFFUSION_CUDA_ATTENTION)."""
    old = os.environ.get(name)
    try:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def kernel_env(variant):
    """Selects the CPU kernel build: "default" is the widest the CPU has."""
    return env_var("TORCH_DIFFUSION_CPU_KERNEL", None if variant == "default" else variant)


@unittest.skipIf(torch is None, "PyTorch is not installed for this Python")
class AttentionKernelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.attention = staticmethod(load_kernels())
        torch.manual_seed(0)
        random.seed(0)

    def check(self, q, k, v, scale=None, mask=None, tol=1e-5, variants=None):
        ref = reference(q, k, v, scale, mask)
        for variant in variants or kernel_variants():
            with kernel_env(variant):
                out = self.attention(q, k, v, scale, mask)
            self.assertEqual(out.dtype, q.dtype)
            self.assertEqual(tuple(out.shape), tuple(q.shape))
            err = rel_err(out, ref)
            self.assertLessEqual(err, tol, f"{variant}: err {err:.3g} for q{tuple(q.shape)} k{tuple(k.shape)}")

    def rand(self, *shape, dtype=torch.float32):
        return torch.randn(*shape).to(dtype)

    # --- forward accuracy -------------------------------------------------------------
    def test_head_dims_fp32(self):
        for d in HEAD_DIMS + [1, 3, 17, 33, 200]:
            q, k, v = self.rand(2, 3, 70, d), self.rand(2, 3, 131, d), self.rand(2, 3, 131, d)
            self.check(q, k, v)

    def test_random_shapes_fp32(self):
        for _ in range(12):
            b, h = random.randint(1, 3), random.randint(1, 4)
            nq, nk, d = random.randint(1, 300), random.randint(1, 300), random.choice(HEAD_DIMS + [8, 24, 96])
            scale = random.choice([None, 0.05, 0.3])
            q, k, v = self.rand(b, h, nq, d), self.rand(b, h, nk, d), self.rand(b, h, nk, d)
            self.check(q, k, v, scale=scale)

    def test_cross_attention_77_keys(self):
        for d in HEAD_DIMS:
            q, k, v = self.rand(1, 8, 256, d), self.rand(1, 8, 77, d), self.rand(1, 8, 77, d)
            self.check(q, k, v)

    def test_half_and_bfloat16(self):
        # The reference is float64 math on the same (already rounded) inputs. Rounding
        # the output to bfloat16 alone can cost 2^-8 = 3.9e-3 relative (8-bit
        # significand), so bfloat16 gets 4e-3; float16 (11 bits) meets 2e-3 easily.
        for dtype, tol in ((torch.float16, 2e-3), (torch.bfloat16, 4e-3)):
            for d in HEAD_DIMS:
                q, k, v = (self.rand(2, 2, 100, d, dtype=dtype) for _ in range(3))
                self.check(q, k, v, tol=tol)
            q, k, v = (self.rand(1, 2, 65, 64, dtype=dtype) for _ in range(3))
            mask = torch.randn(1, 1, 65, 65).to(dtype)
            self.check(q, k, v, mask=mask, tol=tol)

    # --- masks --------------------------------------------------------------------
    def test_additive_masks_broadcast(self):
        b, h, nq, nk, d = 2, 3, 67, 99, 64
        q, k, v = self.rand(b, h, nq, d), self.rand(b, h, nk, d), self.rand(b, h, nk, d)
        for shape in [(b, 1, 1, nk), (nq, nk), (b, h, nq, nk), (1, h, nq, 1), (nk,)]:
            mask = torch.randn(*shape)
            self.check(q, k, v, mask=mask)
        mask = torch.zeros(b, 1, 1, nk)
        mask[..., nk // 2:] = float("-inf")  # padding-style mask
        self.check(q, k, v, mask=mask)
        self.check(q, k, v, mask=torch.randn(nq, nk).double())  # float64 mask on float32 q

    def test_bool_masks_broadcast(self):
        b, h, nq, nk, d = 2, 2, 50, 77, 40
        q, k, v = self.rand(b, h, nq, d), self.rand(b, h, nk, d), self.rand(b, h, nk, d)
        for shape in [(b, 1, 1, nk), (nq, nk), (b, h, nq, nk)]:
            mask = torch.rand(*shape) > 0.5
            mask[..., 0] = True  # keep at least one key per row
            self.check(q, k, v, mask=mask)

    def test_fully_masked_rows_are_zero(self):
        q, k, v = self.rand(1, 2, 10, 64), self.rand(1, 2, 120, 64), self.rand(1, 2, 120, 64)
        mask = torch.ones(10, 120, dtype=torch.bool)
        mask[3] = False
        for variant in kernel_variants():
            with kernel_env(variant):
                out = self.attention(q, k, v, None, mask)
            self.assertTrue(torch.equal(out[:, :, 3], torch.zeros_like(out[:, :, 3])))
            keep = [i for i in range(10) if i != 3]
            self.assertLessEqual(rel_err(out[:, :, keep], reference(q, k, v, None, mask)[:, :, keep]), 1e-5)

    # --- layouts and sizes --------------------------------------------------------------
    def test_non_contiguous_inputs(self):
        b, n, h, d = 2, 90, 4, 80
        q = torch.randn(b, n, h, d).transpose(1, 2)  # [B, N, H, D] view as [B, H, N, D]
        k = torch.randn(b, h, d, 77).transpose(-1, -2)  # head_dim not innermost
        v = torch.randn(b, h, 154, d)[:, :, ::2]  # strided tokens
        self.assertFalse(q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
        self.check(q, k, v)
        self.check(q.half(), k.half(), v.half(), tol=2e-3)

    def test_empty_sizes(self):
        q, k, v = self.rand(1, 2, 0, 64), self.rand(1, 2, 5, 64), self.rand(1, 2, 5, 64)
        self.assertEqual(tuple(self.attention(q, k, v).shape), (1, 2, 0, 64))
        q, k, v = self.rand(1, 2, 4, 64), self.rand(1, 2, 0, 64), self.rand(1, 2, 0, 64)
        self.assertTrue(torch.equal(self.attention(q, k, v), torch.zeros(1, 2, 4, 64)))

    def test_float64_uses_math_path(self):
        q, k, v = (torch.randn(1, 2, 33, 24, dtype=torch.float64) for _ in range(3))
        out = self.attention(q, k, v)
        self.assertEqual(out.dtype, torch.float64)
        self.assertLessEqual(rel_err(out, reference(q, k, v)), 1e-12)

    @unittest.skipUnless(os.path.exists("/proc/self/clear_refs"), "needs Linux /proc peak-RSS reset")
    def test_extra_memory_is_linear(self):
        """4096 tokens x 8 heads: naive scores alone would take 512 MiB; we stay far below."""
        q, k, v = (self.rand(1, 8, 4096, 64) for _ in range(3))
        self.attention(q, k, v)  # warm-up: thread stacks, allocator arenas

        def status_kb(field):
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        base = status_kb("VmRSS")
        out = self.attention(q, k, v)
        extra_mib = (status_kb("VmHWM") - base) / 1024
        del out
        self.assertLess(extra_mib, 96, f"peak extra memory {extra_mib:.0f} MiB")

    # --- gradients ----------------------------------------------------------------
    def test_gradcheck_float64(self):
        q = torch.randn(1, 2, 6, 8, dtype=torch.float64, requires_grad=True)
        k = torch.randn(1, 2, 5, 8, dtype=torch.float64, requires_grad=True)
        v = torch.randn(1, 2, 5, 8, dtype=torch.float64, requires_grad=True)
        mask = torch.randn(6, 5, dtype=torch.float64)
        bmask = torch.rand(1, 1, 6, 5) > 0.3
        bmask[..., 0] = True
        self.assertTrue(torch.autograd.gradcheck(lambda a, b, c: self.attention(a, b, c), (q, k, v)))
        self.assertTrue(torch.autograd.gradcheck(lambda a, b, c: self.attention(a, b, c, 0.7, mask), (q, k, v)))
        self.assertTrue(torch.autograd.gradcheck(lambda a, b, c: self.attention(a, b, c, None, bmask), (q, k, v)))

    def test_float32_grads_match_reference(self):
        for d, mask in [(64, None), (40, torch.randn(1, 1, 1, 77)), (80, torch.rand(130, 77) > 0.2)]:
            if mask is not None and mask.dtype == torch.bool:
                mask[:, 0] = True
            q, k, v = self.rand(2, 2, 130, d), self.rand(2, 2, 77, d), self.rand(2, 2, 77, d)
            grad = torch.randn(2, 2, 130, d)
            ours = [t.clone().requires_grad_() for t in (q, k, v)]
            refs = [t.double().requires_grad_() for t in (q, k, v)]
            (self.attention(*ours, None, mask) * grad).sum().backward()
            (reference(*refs, None, mask) * grad.double()).sum().backward()
            for a, r, name in zip(ours, refs, "qkv"):
                err = rel_err(a.grad, r.grad)
                self.assertLessEqual(err, 1e-4, f"d{name} err {err:.3g} (head_dim {d})")

    def test_half_grads_have_input_dtype(self):
        q, k, v = (self.rand(1, 2, 20, 64, dtype=torch.bfloat16).requires_grad_() for _ in range(3))
        self.attention(q, k, v).float().sum().backward()
        for t in (q, k, v):
            self.assertEqual(t.grad.dtype, torch.bfloat16)
            self.assertTrue(torch.isfinite(t.grad.float()).all())

    def test_no_grad_path(self):
        q, k, v = (self.rand(1, 1, 8, 16).requires_grad_() for _ in range(3))
        with torch.no_grad():
            out = self.attention(q, k, v)
        self.assertFalse(out.requires_grad)

    # --- errors -----------------------------------------------------------------
    def assert_error(self, fragment, *args):
        with self.assertRaises(RuntimeError) as ctx:
            self.attention(*args)
        msg = str(ctx.exception)
        self.assertIn("torch_diffusion::attention:", msg)
        self.assertIn(fragment, msg)

    def test_bad_inputs(self):
        q, k, v = self.rand(1, 2, 8, 16), self.rand(1, 2, 9, 16), self.rand(1, 2, 9, 16)
        self.assert_error("expected q to be a 4-D tensor [batch, heads, tokens, head_dim] but got shape [2, 8, 16]",
                          q[0], k, v)
        self.assert_error("expected q, k, v to have the same dtype but got q Float, k Half, v Float",
                          q, k.half(), v)
        self.assert_error("expected q, k, v to be Float, Half, BFloat16 or Double but got Long",
                          q.long(), k.long(), v.long())
        self.assert_error("expected q and k to have the same head_dim (dim 3) but got q [1, 2, 8, 16] and k [1, 2, 9, 8]",
                          q, k[..., :8], v)
        self.assert_error("expected v to have the same head_dim (dim 3) as q", q, k, v[..., :8])
        self.assert_error("expected q, k, v to have the same batch and heads (dims 0 and 1)", q, k[:, :1], v[:, :1])
        self.assert_error("expected k and v to have the same number of tokens (dim 2) but got k [1, 2, 9, 16] and v [1, 2, 8, 16]",
                          q, k, v[:, :, :8])
        self.assert_error("expected mask of shape [8, 7] to be broadcastable to [batch, heads, q_len, kv_len] = [1, 2, 8, 9]",
                          q, k, v, None, torch.zeros(8, 7))
        self.assert_error("expected mask to be bool (True = attend) or a floating point additive mask but got Long",
                          q, k, v, None, torch.zeros(8, 9, dtype=torch.long))


if __name__ == "__main__":
    unittest.main()
