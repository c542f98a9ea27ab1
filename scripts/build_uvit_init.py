#!/usr/bin/python3
"""The starting point of Simple Diffusion's U-ViT (Hoogeboom et al. 2023) for the 64x64 ablation:
a class-conditional UViT2DModel in pixel space (1 channel; the data is Fashion-MNIST padded to
32x32 and upsampled to 64x64), convolutional ResBlocks at 64x64, 32x32 and 16x16, transformer
blocks at 8x8 (with this libtorch's generic BLAS a 16x16 transformer level cost 4x the step time
on 2 CPU cores), zero-initialized residual branches; written as a model directory (transformer/ +
scheduler/ + id2label) that scripts/train-uvit.ts trains. The scheduler written here is the
shifted cosine (64/32); the training script rewrites it to the schedule it trained with.

  /usr/bin/python3 scripts/build_uvit_init.py [--channels 16,32,64] [--layers 1] [--width 128]
      [--depth 4] [--heads 4] [--dropout 0.1] [--seed 0] [--out build/uvit-init]

  DIR/model/        the model directory;  DIR/compute.json  parameters and Gflops per image
"""
import argparse
import os
import sys
from typing import Optional

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import build_fixtures  # noqa: E402
from build_dit_init import FASHION_MNIST_ID2LABEL, write_compute, write_model_dir  # noqa: E402
from torch_diffusion_models import UViT2DModel  # noqa: E402
from torch_diffusion_models.uvit import initialize_uvit_weights  # noqa: E402

# v-prediction on the shifted cosine schedule of the paper (resolution 64, base 32): logSNR shifted by 2 log(32/64).
SHIFTED_COSINE = {"_class_name": "DDIMScheduler", "_diffusers_version": build_fixtures.DIFFUSERS_VERSION,
                  "num_train_timesteps": 1000, "beta_schedule": "shifted_cosine", "resolution": 64, "base_resolution": 32,
                  "base_resolution_high": None, "logsnr_min": -15, "logsnr_max": 15, "prediction_type": "v_prediction",
                  "clip_sample": False, "set_alpha_to_one": True, "steps_offset": 0, "timestep_spacing": "trailing"}


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="image side")
    parser.add_argument("--channels", default="16,32,64", help="widths of the convolutional levels, from the input resolution down")
    parser.add_argument("--layers", type=int, default=1, help="ResBlocks per level and direction")
    parser.add_argument("--width", type=int, default=128, help="transformer width")
    parser.add_argument("--depth", type=int, default=4, help="transformer blocks at the lowest resolution")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.1, help="dropout of the transformer blocks (the only dropout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "build", "uvit-init"))
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    channels = [int(c) for c in args.channels.split(",")]
    config = build_fixtures.diffusers_config("UViT2DModel", dict(
        sample_size=args.size, in_channels=1, out_channels=1, block_out_channels=channels, layers_per_block=args.layers,
        transformer_width=args.width, transformer_layers=args.depth, num_attention_heads=args.heads, mlp_ratio=4,
        dropout=args.dropout, num_class_embeds=10, norm_num_groups=8, time_embed_dim=None))
    model = initialize_uvit_weights(UViT2DModel(config).eval())
    defaults = {"guidance_scale": 2, "num_inference_steps": 50, "scheduler": "DDIMScheduler"}
    dst = write_model_dir(args.out, "UViTPipeline", model, config, SHIFTED_COSINE, defaults, {"id2label": FASHION_MNIST_ID2LABEL})
    compute = write_compute(args.out, dst, {"channels": channels, "layers": args.layers, "width": args.width, "depth": args.depth,
                                            "heads": args.heads, "dropout": args.dropout, "seed": args.seed,
                                            "init": "scripts/build_uvit_init.py"})
    print(f"U-ViT init {args.size}x{args.size} levels {channels} transformer {args.depth}x{args.width}: "
          f"{compute['parameters'] / 1e6:.2f}M parameters, {compute['gflops']:.4f} Gflops per image -> {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
