"""DiT's adaLN-Zero initialization, Simple Diffusion's U-ViT and the compute counter."""
import unittest

import _helpers  # noqa: F401  (sys.path, thread count)
import torch
from torch import nn

from build_dit_init import dit_config
from model_flops import count_macs
from torch_diffusion_models import AttentionKernel, DiTTransformer2DModel, UViT2DModel
from torch_diffusion_models.dit import initialize_dit_weights
from torch_diffusion_models.uvit import initialize_uvit_weights

SMALL_UVIT = dict(sample_size=16, in_channels=1, out_channels=1, block_out_channels=[8, 16], layers_per_block=2,
                  transformer_width=32, transformer_layers=2, num_attention_heads=2, mlp_ratio=2, dropout=0.1,
                  num_class_embeds=10, norm_num_groups=4, time_embed_dim=32)


class AdaLNZero(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.model = initialize_dit_weights(DiTTransformer2DModel(dit_config(depth=3, width=32, patch=4, heads=2)))
        self.t = torch.tensor([0, 999])
        self.y = torch.tensor([3, 10])

    def test_every_block_is_the_identity_at_initialization(self):
        tokens = torch.randn(2, 64, 32)
        for block in self.model.transformer_blocks:
            self.assertTrue(torch.equal(block(tokens, self.t, self.y), tokens))

    def test_output_is_zero_and_the_output_layer_still_gets_gradients(self):
        out = self.model(torch.randn(2, 1, 32, 32), self.t, self.y)
        self.assertEqual(tuple(out.shape), (2, 2, 32, 32))  # learned sigma: epsilon and v
        self.assertEqual(out.abs().max().item(), 0.0)
        out.sum().backward()
        self.assertGreater(self.model.proj_out_2.weight.grad.abs().sum().item(), 0.0)

    def test_other_layers_follow_dit(self):
        block = self.model.transformer_blocks[0]
        self.assertEqual(block.norm1.linear.weight.abs().max().item(), 0.0)
        self.assertEqual(block.attn1.to_q.bias.abs().max().item(), 0.0)
        self.assertGreater(block.attn1.to_q.weight.abs().max().item(), 0.0)
        self.assertAlmostEqual(block.norm1.emb.class_embedder.embedding_table.weight.std().item(), 0.02, delta=0.004)


class UViT(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(1)
        self.model = UViT2DModel(SMALL_UVIT).eval()
        self.x = torch.randn(2, 1, 16, 16)
        self.t = torch.tensor([5, 900])
        self.y = torch.tensor([2, 10])

    def test_torchscript_equals_eager(self):
        scripted = torch.jit.script(self.model)
        eager = self.model(self.x, self.t, self.y)
        self.assertEqual(tuple(eager.shape), (2, 1, 16, 16))
        self.assertLessEqual(_helpers.max_diff(scripted(self.x, self.t, self.y), eager), 1e-6)

    def test_attention_and_dropout_only_at_the_lowest_resolution(self):
        for name, module in self.model.named_modules():
            if isinstance(module, AttentionKernel):
                self.assertTrue(name.startswith("transformer_blocks."), name)
            if isinstance(module, nn.Dropout) and module.p > 0:
                self.assertTrue(name.startswith("transformer_blocks."), name)
        tokens = []
        hook = self.model.transformer_blocks[0].register_forward_hook(lambda m, args, out: tokens.append(args[0].shape))
        self.model(self.x, self.t, self.y)
        hook.remove()
        self.assertEqual(tuple(tokens[0]), (2, 16, 32))  # 16x16 -> two levels down -> 4x4 tokens of width 32

    def test_skip_connections_pair_up(self):
        # each down ResBlock leaves a skip that exactly one up ResBlock takes (the forward pops them all)
        downs = sum(len(level.resnets) for level in self.model.down_levels)
        ups = sum(len(level.resnets) for level in self.model.up_levels)
        self.assertEqual(downs, ups)

    def test_zero_initialized_residual_branches_give_zero_output(self):
        model = initialize_uvit_weights(UViT2DModel(SMALL_UVIT)).eval()
        self.assertEqual(model(self.x, self.t, self.y).abs().max().item(), 0.0)


class ComputeCount(unittest.TestCase):
    def test_linear_conv_and_attention_multiply_accumulates(self):
        self.assertEqual(count_macs(nn.Linear(5, 7), torch.zeros(3, 5)), 3 * 5 * 7)
        self.assertEqual(count_macs(nn.Conv2d(2, 4, 3, padding=1), torch.zeros(1, 2, 8, 8)), 8 * 8 * 4 * 2 * 9)
        q = torch.zeros(1, 2, 6, 4)
        self.assertEqual(count_macs(AttentionKernel(), q, q, q, None, None), 2 * 1 * 2 * 6 * 6 * 4)


if __name__ == "__main__":
    unittest.main()
