#!/usr/bin/python3
"""The starting point of a class-conditional pixel-space DiT on Fashion-MNIST 32x32 (Peebles & Xie
2023): a DiTTransformer2DModel with learned sigma (2 output channels: epsilon, then the variance
interpolation v) and DiT's adaLN-Zero initialization (every block the identity, output zero), as a
model directory the Node side trains (scripts/train-builtin-dit.ts) and samples:

  DIR/model/             model_index.json (DiTPipeline layout: transformer/ + scheduler/, diffusers'
                         `id2label` with the Fashion-MNIST class names, sampling defaults)
  DIR/model/transformer/ model.pt (TorchScript), config.json, torch_diffusion.json
  DIR/model/scheduler/   DDPMScheduler: linear betas 1e-4..0.02 over 1000 steps, learned_range
  DIR/compute.json       parameters and forward Gflops per image (scripts/model_flops.py's count)

  /usr/bin/python3 scripts/build_dit_init.py [--depth 6] [--width 96] [--patch 4] [--heads W/32]
      [--seed 0] [--out build/dit-init]
"""
import argparse
import json
import os
import shutil
import sys
from typing import Any, Dict, Optional

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import build_fixtures  # noqa: E402  (diffusers_config, DIFFUSERS_VERSION)
import export as exporter  # noqa: E402
from model_flops import denoiser_gflops  # noqa: E402
from safetensors_io import save_file  # noqa: E402
from torch_diffusion_models import DiTTransformer2DModel  # noqa: E402
from torch_diffusion_models.dit import initialize_dit_weights  # noqa: E402

# diffusers' DiTPipeline convention: id -> "name, synonym, ..." (labels are matched case-insensitively).
FASHION_MNIST_ID2LABEL = {
    "0": "T-shirt/top, t-shirt, top", "1": "Trouser, trousers, pair of trousers", "2": "Pullover", "3": "Dress",
    "4": "Coat", "5": "Sandal", "6": "Shirt", "7": "Sneaker", "8": "Bag", "9": "Ankle boot, boot",
}

# Improved DDPM / DiT: linear schedule over 1000 steps, learned-range variance; pixels are in [-1, 1],
# so x0 is clipped (improved DDPM's clip_denoised); "linspace" spacing is improved DDPM's respacing.
DDPM_LEARNED_RANGE = {"_class_name": "DDPMScheduler", "_diffusers_version": build_fixtures.DIFFUSERS_VERSION,
                      "num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                      "variance_type": "learned_range", "prediction_type": "epsilon", "clip_sample": True,
                      "clip_sample_range": 1.0, "timestep_spacing": "linspace", "steps_offset": 0}


def dit_config(depth: int, width: int, patch: int, heads: Optional[int], size: int = 32, classes: int = 10) -> Dict[str, Any]:
    heads = heads or max(1, width // 32)
    if width % heads != 0:
        raise SystemExit(f"--width {width} is not a multiple of --heads {heads}")
    if size % patch != 0:
        raise SystemExit(f"--patch {patch} does not divide the image side {size}")
    return dict(num_attention_heads=heads, attention_head_dim=width // heads, in_channels=1, out_channels=2,
                num_layers=depth, dropout=0.0, norm_num_groups=32, attention_bias=True, sample_size=size,
                patch_size=patch, activation_fn="gelu-approximate", num_embeds_ada_norm=classes, upcast_attention=False,
                norm_type="ada_norm_zero", norm_elementwise_affine=False, norm_eps=1e-5)


def write_model_dir(out: str, pipeline_class: str, component: torch.nn.Module, config: Dict[str, Any],
                    scheduler: Dict[str, Any], defaults: Dict[str, Any], extra_index: Dict[str, Any]) -> str:
    """Writes `component` as the `transformer` of a diffusers-layout folder and exports it into OUT/model;
    returns the model directory. `defaults` become model_index.json's torch_diffusion.defaults."""
    src = os.path.join(out, "diffusers")
    dst = os.path.join(out, "model")
    for folder in (src, dst):
        if os.path.isdir(folder):
            shutil.rmtree(folder)
    os.makedirs(os.path.join(src, "transformer"))
    with open(os.path.join(src, "transformer", "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    save_file({k: v.contiguous() for k, v in component.state_dict().items()},
              os.path.join(src, "transformer", "diffusion_pytorch_model.safetensors"))
    os.makedirs(os.path.join(src, "scheduler"))
    with open(os.path.join(src, "scheduler", "scheduler_config.json"), "w", encoding="utf-8") as f:
        json.dump(scheduler, f, indent=2)
    index = {"_class_name": pipeline_class, "_diffusers_version": build_fixtures.DIFFUSERS_VERSION,
             "scheduler": ["diffusers", scheduler["_class_name"]],
             "transformer": ["diffusers" if config["_class_name"].startswith("DiT") else "torch_diffusion", config["_class_name"]],
             **extra_index}
    with open(os.path.join(src, "model_index.json"), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)
    exporter.export(src, dst, "float32", False, log=lambda *_: None)
    index_file = os.path.join(dst, "model_index.json")
    with open(index_file, encoding="utf-8") as f:
        written = json.load(f)
    written["torch_diffusion"]["defaults"] = defaults
    with open(index_file, "w", encoding="utf-8") as f:
        json.dump(written, f, indent=2)
        f.write("\n")
    return dst


def write_compute(out: str, model_dir: str, extra: Dict[str, Any]) -> Dict[str, Any]:
    compute = {**denoiser_gflops(model_dir), **extra}
    compute["model"] = os.path.relpath(model_dir, out)
    with open(os.path.join(out, "compute.json"), "w", encoding="utf-8") as f:
        json.dump(compute, f, indent=2)
        f.write("\n")
    return compute


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=6, help="transformer blocks")
    parser.add_argument("--width", type=int, default=96, help="hidden size")
    parser.add_argument("--patch", type=int, default=4, help="patch side (32/patch squared tokens)")
    parser.add_argument("--heads", type=int, default=None, help="attention heads (default width/32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "build", "dit-init"))
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    config = build_fixtures.diffusers_config("DiTTransformer2DModel", dit_config(args.depth, args.width, args.patch, args.heads))
    model = initialize_dit_weights(DiTTransformer2DModel(config).eval())
    defaults = {"guidance_scale": 1.5, "num_inference_steps": 100, "scheduler": "DDPMScheduler"}
    dst = write_model_dir(args.out, "DiTPipeline", model, config, DDPM_LEARNED_RANGE, defaults, {"id2label": FASHION_MNIST_ID2LABEL})
    compute = write_compute(args.out, dst, {"depth": args.depth, "width": args.width, "patch": args.patch,
                                            "heads": config["num_attention_heads"], "seed": args.seed,
                                            "init": "scripts/build_dit_init.py"})
    print(f"DiT init depth {args.depth} width {args.width} patch {args.patch}: {compute['parameters'] / 1e6:.2f}M parameters, "
          f"{compute['gflops']:.4f} Gflops per image -> {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
