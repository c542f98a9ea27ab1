#!/usr/bin/python3
"""The built-in model's starting point: a small text-conditioned U-Net in pixel space
(32x32 grayscale, Fashion-MNIST) with a small CLIP-style text encoder over a cut-down CLIP
BPE vocabulary, both with seeded random weights, written as a model directory in our
layout (scripts/export.py) plus `joint.pt`, one TorchScript module holding both networks
so that the Node trainer optimizes them jointly (scripts/train-builtin.ts).

  /usr/bin/python3 scripts/build_builtin_init.py [--out build/builtin-init] [--seed 0]
      [--channels 24,48,96] [--layers-per-block 1] [--attention-levels 1] [--norm-groups 8]

The defaults are the shipped model's (widths 24/48/96 since December 2026; the first built-in
model had 16/32/64); the options are the capacity knobs of issue #13's experiments (block widths,
ResNet layers per level, how many of the lowest-resolution levels get cross-attention: 1 = 8x8
only, 2 = 16x16 and 8x8).
"""
import argparse
import json
import os
import shutil
import sys
from typing import Optional

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import build_fixtures  # noqa: E402  (write_tiny_clip_tokenizer, diffusers/transformers config helpers)
import export as exporter  # noqa: E402
from safetensors_io import save_file  # noqa: E402
from torch_diffusion_models import CLIPTextModel, UNet2DConditionModel  # noqa: E402

VOCAB_SIZE = 4096  # 512 byte tokens + 3582 merges + 2 specials: short captions tokenize to few ids
MAX_LENGTH = 24

TEXT_CONFIG = dict(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   max_position_embeddings=MAX_LENGTH, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=64,
                   attention_dropout=0.0, dropout=0.0, initializer_factor=1.0, initializer_range=0.02,
                   pad_token_id=VOCAB_SIZE - 1, bos_token_id=VOCAB_SIZE - 2, eos_token_id=VOCAB_SIZE - 1, model_type="clip_text_model")

UNET_CONFIG = dict(sample_size=32, in_channels=1, out_channels=1, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
                   # attention only at 8x8 and in the mid block: at 16x16 it cost most of a CPU step
                   down_block_types=["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
                   mid_block_type="UNetMidBlock2DCrossAttn",
                   up_block_types=["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
                   only_cross_attention=False, block_out_channels=[16, 32, 64], layers_per_block=1, downsample_padding=1,
                   mid_block_scale_factor=1, act_fn="silu", norm_num_groups=8, norm_eps=1e-5, cross_attention_dim=64,
                   attention_head_dim=4, dual_cross_attention=False, use_linear_projection=True,
                   class_embed_type=None, num_class_embeds=None, upcast_attention=False, resnet_time_scale_shift="default")

SCHEDULER_CONFIG = {"_class_name": "DDIMScheduler", "_diffusers_version": build_fixtures.DIFFUSERS_VERSION,
                    "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "beta_start": 0.0001, "beta_end": 0.02,
                    "prediction_type": "v_prediction", "clip_sample": False, "clip_sample_range": 1.0, "set_alpha_to_one": True,
                    "steps_offset": 0, "timestep_spacing": "trailing", "rescale_betas_zero_snr": False}


class Joint(torch.nn.Module):
    """Text encoder + U-Net as one module: forward(x_t, t, input_ids) -> prediction."""

    def __init__(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel):
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        context = self.text_encoder(input_ids, None)[0]  # (B, T, D)
        return self.unet(sample, timestep, context, None, None)  # (B, 1, 32, 32)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "build", "builtin-init"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels", default="24,48,96", help="block_out_channels, comma-separated")
    parser.add_argument("--layers-per-block", type=int, default=1)
    parser.add_argument("--attention-levels", type=int, default=1, help="cross-attention on this many of the lowest-resolution levels")
    parser.add_argument("--norm-groups", type=int, default=8)
    args = parser.parse_args(argv)
    channels = [int(c) for c in args.channels.split(",")]
    if not 1 <= args.attention_levels <= len(channels):
        parser.error(f"--attention-levels must be 1..{len(channels)}")
    if any(c % args.norm_groups for c in channels):
        parser.error(f"--channels {args.channels}: every width must be a multiple of --norm-groups {args.norm_groups}")
    plain = len(channels) - args.attention_levels
    unet_layout = dict(block_out_channels=channels, layers_per_block=args.layers_per_block, norm_num_groups=args.norm_groups,
                       down_block_types=["DownBlock2D"] * plain + ["CrossAttnDownBlock2D"] * args.attention_levels,
                       up_block_types=["CrossAttnUpBlock2D"] * args.attention_levels + ["UpBlock2D"] * plain)
    src = os.path.join(args.out, "diffusers")
    dst = os.path.join(args.out, "model")
    for folder in (src, dst):
        if os.path.isdir(folder):
            shutil.rmtree(folder)
    torch.manual_seed(args.seed)
    unet_config = build_fixtures.diffusers_config("UNet2DConditionModel", {**UNET_CONFIG, **unet_layout})
    text_config = build_fixtures.transformers_config("CLIPTextModel", TEXT_CONFIG)
    unet = UNet2DConditionModel(unet_config).eval()
    text_encoder = CLIPTextModel(text_config).eval()
    for name, model, config, weights in (("unet", unet, unet_config, "diffusion_pytorch_model.safetensors"),
                                         ("text_encoder", text_encoder, text_config, "model.safetensors")):
        os.makedirs(os.path.join(src, name))
        with open(os.path.join(src, name, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(src, name, weights))
    build_fixtures.write_tiny_clip_tokenizer(os.path.join(src, "tokenizer"), VOCAB_SIZE, MAX_LENGTH)
    os.makedirs(os.path.join(src, "scheduler"))
    with open(os.path.join(src, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(SCHEDULER_CONFIG, f, indent=2)
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": build_fixtures.DIFFUSERS_VERSION,
             "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"]}
    with open(os.path.join(src, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
    exporter.export(src, dst, "float32", False, log=lambda *_: None)
    torch.jit.script(Joint(unet, text_encoder)).save(os.path.join(args.out, "joint.pt"))
    params = sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in text_encoder.parameters())
    with open(os.path.join(args.out, "init.json"), "w") as f:  # the recipe record names what it started from
        json.dump({"script": "scripts/build_builtin_init.py", "seed": args.seed, "channels": channels, "layersPerBlock": args.layers_per_block,
                   "attentionLevels": args.attention_levels, "normGroups": args.norm_groups, "parameters": params}, f, indent=2)
    print(f"builtin init: {params / 1e6:.2f}M parameters -> {dst} and {os.path.join(args.out, 'joint.pt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
