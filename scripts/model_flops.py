#!/usr/bin/python3
"""Forward compute of a model directory's denoiser, per image at its sample size, counted as DiT
(Peebles & Xie 2023, Table 4) counts "Gflops": multiply-accumulates of the convolutions, linear
layers and attention matmuls (QK^T and AV); normalisations, activations and additions are left out.

  /usr/bin/python3 scripts/model_flops.py DIR [DIR ...] [--json]

DIR is a model directory (model_index.json + unet/ or transformer/) or one component folder
(config.json). The module is rebuilt from its config.json (weights do not change the count). A
text-conditioned U-Net is counted with its prompt context (tokenizer's model_max_length tokens);
the text encoder, which runs once per image rather than once per step, is not counted.
"""
import argparse
import json
import os
import sys
from typing import Any, Dict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from torch_diffusion_models import AttentionKernel, build_model, class_name_of  # noqa: E402

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def count_macs(model: nn.Module, *inputs: Any) -> int:
    """Multiply-accumulates of one forward call of an eager module on `inputs` (all of the batch)."""
    total = [0]

    def conv(module: nn.Conv2d, args, out) -> None:
        kh, kw = module.kernel_size
        total[0] += out.numel() * (module.in_channels // module.groups) * kh * kw

    def linear(module: nn.Linear, args, out) -> None:
        total[0] += out.numel() * module.in_features

    def attention(module: nn.Module, args, out) -> None:
        q, k = args[0], args[1]  # (B, H, Tq, D), (B, H, Tk, D)
        total[0] += 2 * q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * q.shape[3]

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear))
        elif isinstance(m, AttentionKernel):
            handles.append(m.register_forward_hook(attention))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def denoiser_folder(path: str) -> str:
    index = os.path.join(path, "model_index.json")
    if os.path.isfile(index):
        for name in ("unet", "transformer"):
            if os.path.isdir(os.path.join(path, name)):
                return os.path.join(path, name)
        raise SystemExit(f"{path}: no unet/ or transformer/ folder")
    return path


def prompt_length(model_dir: str) -> int:
    for name in ("tokenizer/tokenizer_config.json", "text_encoder/config.json"):
        file = os.path.join(model_dir, name)
        if os.path.isfile(file):
            with open(file, encoding="utf-8") as f:
                cfg = json.load(f)
            length = cfg.get("model_max_length") or cfg.get("max_position_embeddings")
            if isinstance(length, int) and length < 10_000:
                return length
    return 77


def denoiser_gflops(path: str) -> Dict[str, Any]:
    """The denoiser's class, parameter count and forward G(multiply-accumulates) per image."""
    folder = denoiser_folder(path)
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    name = class_name_of(config)
    model = build_model(config, name).eval()
    size = config.get("sample_size", 64)
    size = size[0] if isinstance(size, list) else int(size)
    x = torch.zeros(1, int(config["in_channels"]), size, size)
    t = torch.tensor([500])
    if name == "UNet2DConditionModel":
        context = torch.zeros(1, prompt_length(os.path.dirname(folder)), int(config["cross_attention_dim"]))
        macs = count_macs(model, x, t, context, None, None)
    else:
        macs = count_macs(model, x, t, torch.tensor([0]))
    params = sum(p.numel() for p in model.parameters())
    return {"model": path, "class": name, "sample_size": size, "parameters": params, "gflops": macs / 1e9}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args()
    for d in args.dirs:
        row = denoiser_gflops(d)
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{d}: {row['class']} {row['parameters'] / 1e6:.2f}M parameters, {row['gflops']:.4f} Gflops per image at {row['sample_size']}x{row['sample_size']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
