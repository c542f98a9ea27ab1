"""torch_diffusion::attention on CUDA, every path, against a float64 reference.

Runs where PyTorch sees a CUDA device and scripts/build_kernels_for_python.sh built the
CUDA parts (a CUDA torch and nvcc); skipped elsewhere, so CI on CPU machines passes by.
Each path is forced with TORCH_DIFFUSION_CUDA_ATTENTION (read per call by
attention_cuda.cpp): "fused" is our kernel, "sdpa" torch's scaled_dot_product_attention,
"math" the chunked ATen path. Every path must be within a few roundings of the output
dtype (on an H100 ours matched torch's flash kernel to the printed digits).

Run:  python3 -m unittest scripts.tests.test_attention_cuda -v   (from the repo root)
"""

import unittest

from test_attention_kernel import env_var, load_kernels, reference, rel_err, torch

CUDA = torch is not None and torch.cuda.is_available()
PATHS = ["fused", "sdpa", "math", "auto"]
# (batch, heads, q_len, kv_len, head_dim): SD 1.5 at 512 px (self, cross), SDXL, DiT, odd sizes.
SHAPES = [
    (2, 8, 4096, 4096, 40),
    (2, 8, 4096, 77, 40),
    (2, 10, 1024, 1024, 64),
    (2, 10, 1024, 77, 64),
    (2, 8, 256, 256, 72),
    (1, 4, 130, 131, 80),
    (2, 16, 256, 256, 128),
    (1, 4, 70, 131, 160),
    (1, 2, 65, 33, 256),
    (1, 2, 70, 77, 17),
]


def attention_path(name):
    return env_var("TORCH_DIFFUSION_CUDA_ATTENTION", name)


def has_cuda_kernel():
    if not CUDA:
        return False
    attention = load_kernels()
    try:
        x = torch.zeros(1, 1, 1, 16, device="cuda", dtype=torch.half)
        attention(x, x, x, None, None)
        return True
    except RuntimeError as error:  # built without the CUDA parts: no CUDA kernel registered
        print(f"test_attention_cuda: skipping, {str(error).splitlines()[0]}")
        return False


@unittest.skipUnless(has_cuda_kernel(), "no CUDA device, or the kernel library was built without CUDA")
class AttentionCudaTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.attention = staticmethod(load_kernels())
        torch.manual_seed(0)

    def run_path(self, path, q, k, v, scale=None, mask=None):
        with attention_path(path):
            out = self.attention(q, k, v, scale, mask)
        torch.cuda.synchronize()
        return out

    def errors(self, q, k, v, scale=None, mask=None):
        ref = reference(q, k, v, scale, mask)
        result = {}
        for path in PATHS:
            out = self.run_path(path, q, k, v, scale, mask)
            self.assertEqual((out.dtype, tuple(out.shape), out.device.type), (q.dtype, tuple(q.shape), "cuda"))
            result[path] = rel_err(out, ref)
        return result

    def assert_accurate(self, errs, label, tolerance):
        """Every path within `tolerance` (about 4 roundings of the output dtype) of float64."""
        print(f"  {label}: " + ", ".join(f"{p} {e:.2e}" for p, e in errs.items()))
        for path, err in errs.items():
            self.assertLessEqual(err, tolerance, f"{label}: {path} {errs}")

    def rand(self, *shape, dtype):
        return torch.randn(*shape, device="cuda").to(dtype)

    def test_shapes_half_and_bfloat16(self):
        for dtype, tolerance in [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)]:
            for b, h, n, m, d in SHAPES:
                q, k, v = self.rand(b, h, n, d, dtype=dtype), self.rand(b, h, m, d, dtype=dtype), self.rand(b, h, m, d, dtype=dtype)
                self.assert_accurate(self.errors(q, k, v), f"{dtype} q{(b, h, n, d)} kv{m}", tolerance)

    def test_custom_scale_and_large_logits(self):
        q, k, v = (self.rand(1, 4, 200, 64, dtype=torch.float16) for _ in range(3))
        self.assert_accurate(self.errors(q * 4, k * 4, v, scale=0.3), "scale 0.3, |logits| ~ 80", 4e-3)

    def test_masks(self):
        dtype = torch.float16
        q, k, v = self.rand(2, 4, 100, 64, dtype=dtype), self.rand(2, 4, 77, 64, dtype=dtype), self.rand(2, 4, 77, 64, dtype=dtype)
        keep = (torch.arange(77, device="cuda") < torch.tensor([50, 77], device="cuda")[:, None]).view(2, 1, 1, 77)
        self.assert_accurate(self.errors(q, k, v, mask=keep), "bool [B,1,1,K] padding mask", 2e-3)
        additive = torch.randn(1, 4, 100, 77, device="cuda")
        self.assert_accurate(self.errors(q, k, v, mask=additive), "additive float32 [1,H,Q,K]", 2e-3)
        self.assert_accurate(self.errors(q, k, v, mask=additive.half()), "additive float16", 2e-3)

    def test_fully_masked_rows_are_zero_on_fused_and_math(self):
        q, k, v = (self.rand(1, 2, 64, 64, dtype=torch.float16) for _ in range(3))
        mask = torch.ones(1, 1, 64, 64, dtype=torch.bool, device="cuda")
        mask[..., 5, :] = False
        for path in ["fused", "math"]:
            out = self.run_path(path, q, k, v, mask=mask)
            self.assertEqual(out[..., 5, :].abs().max().item(), 0.0, path)
            self.assertTrue(torch.isfinite(out).all().item(), path)

    def test_non_contiguous_and_unaligned(self):
        dtype = torch.float16
        base = self.rand(2, 300, 8, 64, dtype=dtype)
        q = base.transpose(1, 2)  # [B, H, T, D] view of [B, T, H, D]: stride(3) == 1, not contiguous
        self.assertFalse(q.is_contiguous())
        self.assert_accurate(self.errors(q, q, q), "transposed [B,T,H,D] views", 2e-3)
        odd = self.rand(1, 2, 90, 41, dtype=dtype)[..., 1:]  # inner stride 1, 2-byte misaligned rows
        self.assert_accurate(self.errors(odd, odd, odd), "misaligned start, rows of 41", 2e-3)
        shifted = self.rand(2 * 90 * 40 + 1, dtype=dtype)[1:].view(1, 2, 90, 40)  # rows of 40, start 2 bytes in
        self.assert_accurate(self.errors(shifted, shifted, shifted), "misaligned start, rows of 40", 2e-3)
        wide = self.rand(1, 2, 90, 41, dtype=dtype)[..., :40]  # aligned start, rows of 41
        self.assert_accurate(self.errors(wide, wide, wide), "aligned start, rows of 41", 2e-3)
        strided = self.rand(1, 2, 64, 128, dtype=dtype)[..., ::2]  # inner stride 2: copied first
        self.assert_accurate(self.errors(strided, strided, strided), "inner stride 2", 2e-3)

    def test_float32_and_float64(self):
        q, k, v = (torch.randn(2, 4, 100, 64, device="cuda") for _ in range(3))
        ref = reference(q, k, v)
        for path in PATHS:
            out = self.run_path(path, q, k, v)
            self.assertEqual(out.dtype, torch.float32)
            # TF32 may be on for SDPA's matmuls; the math path and our fallback are float32.
            self.assertLessEqual(rel_err(out, ref), 5e-3 if path in ("sdpa", "auto") else 1e-5, path)
        qd, kd, vd = (t.double() for t in (q, k, v))
        self.assertLessEqual(rel_err(self.run_path("fused", qd, kd, vd), ref), 1e-12)

    def test_deterministic_and_on_a_side_stream(self):
        q, k, v = (self.rand(2, 8, 1024, 64, dtype=torch.float16) for _ in range(3))
        first = self.run_path("fused", q, k, v)
        self.assertTrue(torch.equal(first, self.run_path("fused", q, k, v)))
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), attention_path("fused"):
            side = self.attention(q, k, v, None, None)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        self.assertTrue(torch.equal(first, side))

    def test_gradients_match_reference(self):
        for path in ["fused", "sdpa", "math"]:
            q0, k0, v0 = (torch.randn(1, 2, 80, 64, device="cuda", dtype=torch.float16) for _ in range(3))
            up = torch.randn(1, 2, 80, 64, device="cuda", dtype=torch.float16)
            q, k, v = (t.clone().requires_grad_() for t in (q0, k0, v0))
            with attention_path(path):
                (self.attention(q, k, v, None, None).float() * up.float()).sum().backward()
            qr, kr, vr = (t.double().requires_grad_() for t in (q0, k0, v0))
            (reference(qr, kr, vr) * up.double()).sum().backward()
            for got, want, name in [(q.grad, qr.grad, "q"), (k.grad, kr.grad, "k"), (v.grad, vr.grad, "v")]:
                self.assertEqual(got.dtype, torch.float16)
                self.assertLessEqual(rel_err(got, want), 2e-2, f"{path} d{name}")

    def test_gradcheck_float64(self):
        q, k, v = (torch.randn(1, 2, 9, 8, device="cuda", dtype=torch.float64, requires_grad=True) for _ in range(3))
        self.assertTrue(torch.autograd.gradcheck(lambda a, b, c: self.attention(a, b, c, None, None), (q, k, v)))

    def test_bad_inputs_raise(self):
        q = self.rand(1, 2, 8, 16, dtype=torch.float16)
        with self.assertRaisesRegex(RuntimeError, "same dtype"):
            self.attention(q, q.float(), q, None, None)
        with self.assertRaisesRegex(RuntimeError, "device|same"):
            self.attention(q, q.cpu(), q, None, None)


if __name__ == "__main__":
    unittest.main()
