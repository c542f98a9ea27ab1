"""Architecture and numerics tests: our modules against independent formulas and real checkpoint layouts."""
import math
import subprocess
import sys
import unittest

import _helpers
import numpy as np
import torch
import torch.nn.functional as F

import torch_diffusion_models as tdm
from torch_diffusion_models.embeddings import get_2d_sincos_pos_embed, get_timestep_embedding

SD15_UNET = dict(block_out_channels=[320, 640, 1280, 1280], cross_attention_dim=768, attention_head_dim=8)
SDXL_UNET = dict(addition_embed_type="text_time", addition_time_embed_dim=256, attention_head_dim=[5, 10, 20],
                 block_out_channels=[320, 640, 1280], cross_attention_dim=2048,
                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                 projection_class_embeddings_input_dim=2816, transformer_layers_per_block=[1, 2, 10],
                 use_linear_projection=True)
SD_VAE = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
              up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, latent_channels=4)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12)
DIT_XL = dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
              sample_size=32, patch_size=2, num_embeds_ada_norm=1000)


def shapes(model):
    return {k: list(v.shape) for k, v in model.state_dict().items()}


class RealCheckpointLayouts(unittest.TestCase):
    """Key counts, parameter counts and spot-checked names/shapes of the published checkpoints."""

    def check(self, cls, config, n_keys, n_params, spots):
        with _helpers.no_init():
            model = cls(config)
        s = shapes(model)
        self.assertEqual(len(s), n_keys)
        self.assertEqual(sum(math.prod(v) for v in s.values()), n_params)
        for key, shape in spots.items():
            self.assertIn(key, s)
            self.assertEqual(s[key], shape, key)
        del model

    def test_sd15_unet(self):
        self.check(tdm.UNet2DConditionModel, SD15_UNET, 686, 859520964, {
            "down_blocks.0.attentions.0.proj_in.weight": [320, 320, 1, 1],
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": [320, 768],
            "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight": [2560, 320],
            "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight": [320, 1280],
            "down_blocks.0.downsamplers.0.conv.weight": [320, 320, 3, 3],
            "up_blocks.0.resnets.0.conv1.weight": [1280, 2560, 3, 3],
            "up_blocks.0.upsamplers.0.conv.weight": [1280, 1280, 3, 3],
            "up_blocks.3.resnets.2.conv_shortcut.weight": [320, 640, 1, 1],
            "mid_block.attentions.0.transformer_blocks.0.norm3.weight": [1280],
            "time_embedding.linear_1.weight": [1280, 320],
            "conv_out.weight": [4, 320, 3, 3]})

    def test_sdxl_unet(self):
        self.check(tdm.UNet2DConditionModel, SDXL_UNET, 1680, 2567463684, {
            "add_embedding.linear_1.weight": [1280, 2816],
            "down_blocks.1.attentions.0.proj_in.weight": [640, 640],
            "down_blocks.2.attentions.1.transformer_blocks.9.attn1.to_q.weight": [1280, 1280],
            "up_blocks.0.attentions.2.transformer_blocks.9.attn2.to_k.weight": [1280, 2048]})

    def test_vae_clip_dit(self):
        self.check(tdm.AutoencoderKL, SD_VAE, 248, 83653863, {
            "encoder.down_blocks.0.downsamplers.0.conv.weight": [128, 128, 3, 3],
            "decoder.up_blocks.3.resnets.0.conv_shortcut.weight": [128, 256, 1, 1],
            "encoder.conv_out.weight": [8, 512, 3, 3], "quant_conv.weight": [8, 8, 1, 1],
            "decoder.mid_block.attentions.0.to_q.weight": [512, 512],
            "decoder.mid_block.attentions.0.group_norm.weight": [512]})
        self.check(tdm.CLIPTextModel, CLIP_L, 196, 123060480, {
            "text_model.encoder.layers.11.mlp.fc1.weight": [3072, 768],
            "text_model.embeddings.position_embedding.weight": [77, 768]})
        self.check(tdm.CLIPTextModelWithProjection,
                   dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                        projection_dim=1280, hidden_act="gelu"), 517, 694659840,
                   {"text_projection.weight": [1280, 1280]})
        self.check(tdm.DiTTransformer2DModel, DIT_XL, 538, 749826464, {
            "transformer_blocks.27.norm1.emb.class_embedder.embedding_table.weight": [1001, 1152],
            "transformer_blocks.0.norm1.linear.weight": [6912, 1152],
            "transformer_blocks.0.ff.net.0.proj.weight": [4608, 1152],
            "proj_out_2.weight": [32, 1152], "pos_embed.proj.weight": [1152, 4, 2, 2]})

    def test_head_count_quirk(self):
        # attention_head_dim is the number of heads (SD1); num_attention_heads overrides it
        cfg = dict(block_out_channels=[32, 64], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                   up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=16, norm_num_groups=8,
                   layers_per_block=1, attention_head_dim=4)
        m = tdm.UNet2DConditionModel(cfg)
        self.assertEqual(m.down_blocks[0].attentions[0].transformer_blocks[0].attn1.heads, 4)
        self.assertEqual(m.mid_block.attentions[0].transformer_blocks[0].attn2.heads, 4)
        m = tdm.UNet2DConditionModel(dict(cfg, num_attention_heads=[2, 8]))
        self.assertEqual(m.down_blocks[0].attentions[0].transformer_blocks[0].attn1.heads, 2)
        self.assertEqual(m.up_blocks[1].attentions[0].transformer_blocks[0].attn1.heads, 2)
        self.assertEqual(m.mid_block.attentions[0].transformer_blocks[0].attn1.heads, 8)

    def test_unsupported_config(self):
        with self.assertRaises(NotImplementedError):
            tdm.UNet2DConditionModel(dict(SD15_UNET, class_embed_type="timestep"))
        with self.assertRaises(NotImplementedError):
            tdm.build_model({"_class_name": "UNet2DModel"})


class Numerics(unittest.TestCase):
    def test_import_does_not_define_the_op(self):
        # a native TORCH_LIBRARY(torch_diffusion) must still be loadable after importing the package
        code = ("import sys; sys.path.insert(0, %r); import torch_diffusion_models as t; "
                "print(t.attention_op_defined())" % _helpers.SCRIPTS)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout.strip(), "False")

    def test_timestep_embedding(self):
        t = torch.tensor([0.0, 1.0, 999.0, 37.5])
        for dim, flip, shift in ((320, True, 0.0), (256, True, 1.0), (7, False, 1.0)):
            half = dim // 2
            freqs = np.exp(-math.log(10000) * np.arange(half, dtype=np.float32) / np.float32(half - shift))
            args = t.numpy()[:, None] * freqs[None, :]
            ref = np.concatenate([np.cos(args), np.sin(args)] if flip else [np.sin(args), np.cos(args)], axis=1)
            if dim % 2:
                ref = np.pad(ref, ((0, 0), (0, 1)))
            got = get_timestep_embedding(t, dim, flip, shift)
            self.assertEqual(tuple(got.shape), (4, dim))
            np.testing.assert_allclose(got.numpy(), ref, atol=2e-4)

    def test_2d_sincos_matches_numpy_formula(self):
        for d, grid, base, interp in ((16, (4, 4), 4, 1.0), (8, (3, 5), 4, 1.0), (32, (6, 6), 16, 2.0)):
            gh = np.arange(grid[0], dtype=np.float32) / (grid[0] / base) / interp
            gw = np.arange(grid[1], dtype=np.float32) / (grid[1] / base) / interp
            mesh = np.meshgrid(gw, gh)  # w first, as diffusers

            def one(dim, pos):
                omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
                out = np.einsum("m,d->md", pos.reshape(-1), omega)
                return np.concatenate([np.sin(out), np.cos(out)], axis=1)

            ref = np.concatenate([one(d // 2, mesh[0]), one(d // 2, mesh[1])], axis=1).astype(np.float32)
            got = get_2d_sincos_pos_embed(d, list(grid), base, interp, torch.device("cpu"))
            np.testing.assert_allclose(got.numpy(), ref, atol=1e-6)

    def test_attention_math(self):
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
        ref = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1) @ v
        tdm.ensure_attention_op()
        self.assertLess(_helpers.max_diff(tdm.attention(q, k, v), ref), 1e-6)
        self.assertLess(_helpers.max_diff(torch.ops.torch_diffusion.attention(q, k, v, None, None), ref), 1e-6)
        keep = torch.rand(2, 1, 5, 5, generator=g) > 0.3
        keep[..., 0] = True
        add = torch.zeros(keep.shape).masked_fill(~keep, -1e9)
        a = tdm.attention(q, k, v, 0.25, keep)
        b = torch.ops.torch_diffusion.attention(q, k, v, 0.25, add)
        ref = torch.softmax(q @ k.transpose(-1, -2) * 0.25 + add, -1) @ v
        self.assertLess(_helpers.max_diff(a, ref), 1e-6)
        self.assertLess(_helpers.max_diff(b, ref), 1e-6)
        # half inputs accumulate in float32 and come back as half
        out = tdm.math_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
        self.assertEqual(out.dtype, torch.bfloat16)

    def test_clip_pooling_and_hidden_states(self):
        torch.manual_seed(0)
        cfg = dict(vocab_size=50, hidden_size=8, intermediate_size=16, num_hidden_layers=3, num_attention_heads=2,
                   max_position_embeddings=10, eos_token_id=2)
        m = tdm.CLIPTextModel(cfg).eval()
        ids = torch.tensor([[0, 5, 49, 49, 3], [0, 7, 8, 49, 49]])
        last, pooled, pen = m(ids)
        self.assertTrue(torch.equal(pooled, last[torch.arange(2), torch.tensor([2, 3])]))
        states = m.all_hidden_states(ids)
        self.assertEqual(len(states), 4)
        self.assertTrue(torch.equal(pen, states[-2]))
        self.assertLess(_helpers.max_diff(m.final_layer_norm(states[-1]), last), 1e-6)
        m2 = tdm.CLIPTextModel(dict(cfg, eos_token_id=7)).eval()
        _, pooled2, _ = m2(ids)
        last2 = m2(ids)[0]
        self.assertTrue(torch.equal(pooled2[1], last2[1, 1]))
        self.assertTrue(torch.equal(pooled2[0], last2[0, 0]))  # no eos: argmax of all-false is 0
        # causality: changing a later token leaves earlier positions unchanged
        ids2 = ids.clone()
        ids2[:, 4] = 11
        self.assertTrue(torch.allclose(m(ids2)[0][:, :4], last[:, :4]))

    def test_vae_legacy_names_and_logvar_layout(self):
        torch.manual_seed(0)
        cfg = dict(block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2,
                   up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=4)
        vae = tdm.AutoencoderKL(cfg).eval()
        legacy = {}
        for k, v in vae.state_dict().items():
            k = k.replace("to_q.", "query.").replace("to_k.", "key.").replace("to_v.", "value.")
            k = k.replace("to_out.0.", "proj_attn.")
            if k.endswith("proj_attn.weight"):
                v = v[:, :, None, None]  # 1x1-conv shaped, as some converted checkpoints have
            legacy[k] = v
        fresh = tdm.AutoencoderKL(cfg).eval()
        tdm.load_state_dict_strict(fresh, legacy, "AutoencoderKL", ["legacy.safetensors"])
        x = torch.randn(1, 3, 8, 8)
        self.assertLess(_helpers.max_diff(fresh(x), vae(x)), 1e-6)
        self.assertEqual(tuple(vae.encode(x).shape), (1, 8, 4, 4))


if __name__ == "__main__":
    unittest.main()
