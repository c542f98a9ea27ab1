"""UNet2DConditionModel.forward_attention_control (prompt-to-prompt's hook): with no replacements it is
forward, bit for bit; it records what the eager layers compute; replacements act as if each
cross-attention layer's softmax had been swapped for them; the export describes it."""
import json
import os
import tempfile
import unittest

import _helpers
import torch
from torch import Tensor, nn

import build_fixtures as bf
import export as exporter
import torch_diffusion_models as tdm
from torch_diffusion_models.attention import AttentionKernel, attention_probs
from torch_diffusion_models.transformer_2d import BasicTransformerBlock

CONFIGS = {
    "tiny-unet": bf.TINY_UNET,  # 4 cross-attention layers: a down block, the mid block, an up block (2); conv projections
    "tiny-unet-sdxl": bf.TINY_UNET_SDXL,  # two transformer layers in one block, linear projections, text_time
}


def inputs(cfg, batch=2, size=(8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = [torch.randn(batch, cfg["in_channels"], *size, generator=g), torch.tensor(321),
         torch.randn(batch, 5, cfg["cross_attention_dim"], generator=g)]
    if cfg.get("addition_embed_type") == "text_time":
        te = cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"]
        extra = [torch.randn(batch, te, generator=g), torch.tensor([[8.0, 8.0, 0.0, 0.0, 8.0, 8.0]] * batch)]
    else:
        extra = [None, None]
    return x, extra


class ReplacedKernel(nn.Module):
    """An eager stand-in for one cross-attention layer's kernel: records softmax(QK^T), or attends with
    `replacement` (+ own_weight * own) instead — the computation the hook promises, written independently."""

    def __init__(self, recorded, replacement=None, own_weight=None):
        super().__init__()
        self.recorded, self.replacement, self.own_weight = recorded, replacement, own_weight

    def forward(self, q: Tensor, k: Tensor, v: Tensor, scale, mask) -> Tensor:
        probs = torch.softmax(q @ k.transpose(-1, -2) * scale, -1)
        self.recorded.append(probs)
        if self.replacement is not None:
            probs = self.replacement if self.own_weight is None else probs * self.own_weight + self.replacement
        return probs @ v


def cross_attention_layers(model):
    return [m.attn2 for m in model.modules() if isinstance(m, BasicTransformerBlock)]


class AttentionControl(unittest.TestCase):
    def build(self, name, seed=1):
        torch.manual_seed(seed)
        return bf.random_model(bf.diffusers_config("UNet2DConditionModel", CONFIGS[name]), seed)

    def test_without_replacements_it_is_forward_bit_for_bit(self):
        for name, cfg in CONFIGS.items():
            model = self.build(name)
            scripted = torch.jit.script(model)
            for size in ((8, 8), (7, 9)):
                (x, t, c), extra = inputs(cfg, size=size)
                with torch.no_grad():
                    expected = model(x, t, c, *extra)
                    for m in (model, scripted):
                        got, probs = m.forward_attention_control(x, t, c, [], None, *extra)
                        self.assertTrue(torch.equal(got, expected), f"{name} {size}")
                        self.assertEqual(len(probs), model.cross_attention_layers)
                        self.assertTrue(torch.equal(scripted(x, t, c, *extra), expected))

    def test_records_and_replaces_as_the_eager_layers_would(self):
        for name, cfg in CONFIGS.items():
            model = self.build(name)
            scripted = torch.jit.script(model)
            (x, t, c), extra = inputs(cfg)
            layers = cross_attention_layers(model)
            with torch.no_grad():
                # recording: each layer's softmax(QK^T), in the U-Net's order
                eager_probs = []
                for layer in layers:
                    layer.kernel = ReplacedKernel(eager_probs)
                eager = model(x, t, c, *extra)
                got, probs = scripted.forward_attention_control(x, t, c, [], None, *extra)
                self.assertLess(_helpers.max_diff(got, eager), 1e-5, name)
                self.assertEqual([tuple(p.shape) for p in probs], [tuple(p.shape) for p in eager_probs])
                self.assertLess(_helpers.max_diff(probs, eager_probs), 1e-6, name)
                self.assertEqual(probs[0].dtype, torch.float32)
                # replacing: random maps, alone and mixed with the layer's own attention
                g = torch.Generator().manual_seed(7)
                replacements = [torch.softmax(torch.randn(p.shape, generator=g), -1) for p in probs]
                own = torch.rand(x.shape[0], 1, 1, c.shape[1], generator=g)
                for own_weight in (None, own):
                    seen = []
                    for layer, r in zip(layers, replacements):
                        layer.kernel = ReplacedKernel(seen, r, own_weight)
                    eager = model(x, t, c, *extra)
                    got, _ = scripted.forward_attention_control(x, t, c, replacements, own_weight, *extra)
                    self.assertLess(_helpers.max_diff(got, eager), 1e-5, name)
                    self.assertGreater(_helpers.max_diff(got, scripted(x, t, c, *extra)), 1e-3, name)
            for layer in layers:
                layer.kernel = AttentionKernel()

    def test_own_probabilities_as_replacement_change_nothing(self):
        cfg = CONFIGS["tiny-unet"]
        scripted = torch.jit.script(self.build("tiny-unet"))
        (x, t, c), extra = inputs(cfg)
        with torch.no_grad():
            expected, probs = scripted.forward_attention_control(x, t, c, [])
            replaced, _ = scripted.forward_attention_control(x, t, c, probs)
            zeros = [torch.zeros_like(p) for p in probs]
            kept, _ = scripted.forward_attention_control(x, t, c, zeros, torch.ones(1, 1, 1, c.shape[1]))
        self.assertTrue(torch.equal(replaced, expected))
        self.assertTrue(torch.equal(kept, expected))

    def test_bad_replacements_are_errors(self):
        cfg = CONFIGS["tiny-unet"]
        scripted = torch.jit.script(self.build("tiny-unet"))
        (x, t, c), _ = inputs(cfg)
        with torch.no_grad():
            _, probs = scripted.forward_attention_control(x, t, c, [])
            with self.assertRaisesRegex(Exception, "1 replacements for 4 cross-attention layers"):
                scripted.forward_attention_control(x, t, c, probs[:1])
            with self.assertRaisesRegex(Exception, "replacement 0 has shape"):
                scripted.forward_attention_control(x, t, c, [p[:1] for p in probs])

    def test_probabilities_match_the_attention_math(self):
        g = torch.Generator().manual_seed(3)
        q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
        self.assertTrue(torch.equal(tdm.math_attention(q, k, v, 0.3),
                                    torch.matmul(attention_probs(q, k, 0.3), v)))
        half = attention_probs(q.half(), k.half())
        self.assertEqual(half.dtype, torch.float32)

    def test_export_has_the_method_and_describes_it(self):
        for fused in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                src = os.path.join(tmp, "src")
                config = bf.diffusers_config("UNet2DConditionModel", CONFIGS["tiny-unet"])
                bf.write_diffusers_folder(src, config, self.build("tiny-unet"), "diffusion_pytorch_model.safetensors")
                dst = os.path.join(tmp, "out")
                meta = exporter.export(src, dst, "float32", fused, log=lambda *_: None)
                self.assertIn("forward_attention_control", meta["methods"])
                with open(os.path.join(dst, "torch_diffusion.json"), encoding="utf-8") as f:
                    outputs = json.load(f)["methods"]["forward_attention_control"]["outputs"]
                self.assertEqual([o["name"] for o in outputs], ["sample", "attention_probs"])
                loaded = torch.jit.load(os.path.join(dst, "model.pt"))
                (x, t, c), _ = inputs(CONFIGS["tiny-unet"])
                with torch.no_grad():
                    got, probs = loaded.forward_attention_control(x, t, c, [])
                    # a fused export's forward runs the fused op; the controlled path is the math one
                    self.assertLess(_helpers.max_diff(got, loaded(x, t, c)), 1e-5)
                self.assertEqual(len(probs), 4)
            tdm.set_fused_attention(False)


if __name__ == "__main__":
    unittest.main()
