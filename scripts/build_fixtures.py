#!/usr/bin/python3
"""Build tiny seeded-random fixtures of every supported architecture.

usage: /usr/bin/python3 scripts/build_fixtures.py [--root test/fixtures]

For each fixture NAME it writes
  <root>/diffusers/NAME/          diffusers-layout folder (config.json + diffusion_pytorch_model.safetensors,
                                  or config.json + model.safetensors for transformers' CLIP), via our writer
  <root>/models/NAME/             exported with export.py (model.pt, config.json, torch_diffusion.json)
  <root>/models/NAME/reference.json  fixed seeded inputs and the PyTorch outputs (see REFERENCE FORMAT)
plus the pipeline fixture tiny-sd (model_index.json + unet/vae/text_encoder/scheduler) and fused-attention
exports tiny-unet-fused and tiny-clip-text-fused (same weights and references), and the raw diffusers
pipeline tiny-ip2p (an InstructPix2Pix folder; not exported here: the tests convert it, and
scripts/fixtures/instruct_pix2pix_ref.py writes its PyTorch reference).

--only tiny-ip2p rebuilds just that folder and leaves every other fixture untouched.

REFERENCE FORMAT
{"name", "class", "dtype", "fused_attention", "atol": 1e-5,
 "cases": [{"name", "method": "forward"|"encode"|"decode",
            "inputs":  [{"name", "dtype": "float32"|"int64", "shape": [...], "data": [flat row-major]}
                        | {"name", "none": true}],          # positional order of the method's arguments
            "outputs": [{"name", "dtype", "shape", "data"}]}]}  # a tuple result gives several outputs
"""
import argparse
import json
import os
import shutil
import sys
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import export as exporter  # noqa: E402
from safetensors_io import save_file  # noqa: E402
from torch_diffusion_models import build_model, set_fused_attention  # noqa: E402
from torch_diffusion_models.signatures import output_names  # noqa: E402

DIFFUSERS_VERSION = "0.30.0"
TRANSFORMERS_VERSION = "4.44.0"
ATOL = 1e-5

TINY_CLIP = dict(vocab_size=1000, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=16, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=8,
                 attention_dropout=0.0, dropout=0.0, initializer_factor=1.0, initializer_range=0.02,
                 pad_token_id=1, bos_token_id=0, eos_token_id=2, model_type="clip_text_model")
TINY_CLIP_PROJ = dict(TINY_CLIP, hidden_act="gelu", eos_token_id=999, pad_token_id=0, bos_token_id=998)
TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True,
                 freq_shift=0, down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                 mid_block_type="UNetMidBlock2DCrossAttn", up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
                 only_cross_attention=False, block_out_channels=[8, 16], layers_per_block=1, downsample_padding=1,
                 mid_block_scale_factor=1, act_fn="silu", norm_num_groups=4, norm_eps=1e-5, cross_attention_dim=16,
                 attention_head_dim=2, dual_cross_attention=False, use_linear_projection=False,
                 class_embed_type=None, num_class_embeds=None, upcast_attention=False,
                 resnet_time_scale_shift="default")
TINY_UNET_IP2P = dict(TINY_UNET, in_channels=8)  # InstructPix2Pix: noisy latents + image latents
TINY_UNET_SDXL = dict(TINY_UNET, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                      up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], transformer_layers_per_block=[1, 2],
                      attention_head_dim=[2, 4], use_linear_projection=True, addition_embed_type="text_time",
                      addition_embed_type_num_heads=64, addition_time_embed_dim=4,
                      projection_class_embeddings_input_dim=8 + 6 * 4, norm_eps=1e-6)
TINY_VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], block_out_channels=[8, 16],
                layers_per_block=1, act_fn="silu", latent_channels=4, norm_num_groups=4, sample_size=16,
                scaling_factor=0.18215, force_upcast=True)
TINY_DIT = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
                dropout=0.0, norm_num_groups=32, attention_bias=True, sample_size=8, patch_size=2,
                activation_fn="gelu-approximate", num_embeds_ada_norm=10, upcast_attention=False,
                norm_type="ada_norm_zero", norm_elementwise_affine=False, norm_eps=1e-5)
# timbrooks/instruct-pix2pix's scheduler/scheduler_config.json (timestep_spacing absent: "linspace")
EULER_ANCESTRAL_IP2P_CONFIG = {"_class_name": "EulerAncestralDiscreteScheduler", "_diffusers_version": DIFFUSERS_VERSION,
                               "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                               "num_train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1,
                               "trained_betas": None}
# what transformers' CLIPImageProcessor.save_pretrained writes for Stable Diffusion's feature_extractor/
CLIP_IMAGE_PROCESSOR = {"crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
                        "do_normalize": True, "do_rescale": True, "do_resize": True,
                        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "CLIPImageProcessor",
                        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
                        "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 224}}
PNDM_CONFIG = {"_class_name": "PNDMScheduler", "_diffusers_version": DIFFUSERS_VERSION, "beta_end": 0.012,
               "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
               "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
               "steps_offset": 1, "trained_betas": None, "prediction_type": "epsilon", "timestep_spacing": "leading"}


def diffusers_config(class_name: str, cfg: Dict[str, Any]) -> Dict[str, Any]:
    return {"_class_name": class_name, "_diffusers_version": DIFFUSERS_VERSION, **cfg}


def transformers_config(class_name: str, cfg: Dict[str, Any]) -> Dict[str, Any]:
    return {"architectures": [class_name], **cfg, "torch_dtype": "float32", "transformers_version": TRANSFORMERS_VERSION}


def random_model(config: Dict[str, Any], seed: int) -> torch.nn.Module:
    """Default PyTorch init under a seed, with norm affines perturbed so they matter."""
    torch.manual_seed(seed)
    model = build_model(config)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.split(".")[-2]:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def write_diffusers_folder(folder: str, config: Dict[str, Any], model: torch.nn.Module, weights_name: str) -> None:
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(folder, weights_name),
              {"format": "pt"})


def _floats(t: torch.Tensor) -> List[float]:
    # shortest float32 text that reads back to the same float32
    return [float(str(v)) for v in t.detach().to(torch.float32).reshape(-1).numpy().astype(np.float32)]


def tensor_json(name: str, t: Optional[torch.Tensor]) -> Dict[str, Any]:
    if t is None:
        return {"name": name, "none": True}
    if t.dtype.is_floating_point:
        return {"name": name, "dtype": "float32", "shape": list(t.shape), "data": _floats(t)}
    return {"name": name, "dtype": "int64", "shape": list(t.shape), "data": [int(v) for v in t.reshape(-1).tolist()]}


def run_case(model: torch.nn.Module, method: str, inputs: List[Any]) -> List[torch.Tensor]:
    with torch.no_grad():
        out = getattr(model, method)(*inputs)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def make_reference(name: str, class_name: str, eager: torch.nn.Module, scripted: torch.jit.ScriptModule,
                   cases: List[Dict[str, Any]], fused: bool) -> Dict[str, Any]:
    ref_cases = []
    for case in cases:
        outs = run_case(eager, case["method"], case["inputs"])
        souts = run_case(scripted, case["method"], case["inputs"])
        for a, b in zip(outs, souts):
            err = (a - b).abs().max().item()
            if not err <= 1e-6:
                raise RuntimeError(f"{name}/{case['name']}: TorchScript differs from eager by {err}")
        names = output_names(class_name, case["method"])
        ref_cases.append({
            "name": case["name"], "method": case["method"],
            "inputs": [tensor_json(n, t) for n, t in zip(case["input_names"], case["inputs"])],
            "outputs": [tensor_json(n, t) for n, t in zip(names, outs)],
        })
    return {"name": name, "class": class_name, "dtype": "float32", "fused_attention": fused, "atol": ATOL,
            "cases": ref_cases}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unet_cases(cfg: Dict[str, Any]) -> List[Dict[str, Any]]:
    g = _gen(100)
    d = cfg["cross_attention_dim"]
    names = ["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"]
    sdxl = cfg.get("addition_embed_type") == "text_time"
    te = cfg.get("projection_class_embeddings_input_dim", 0) - 6 * (cfg.get("addition_time_embed_dim") or 0)

    def extra(b: int) -> List[Optional[torch.Tensor]]:
        if not sdxl:
            return [None, None]
        ids = torch.tensor([[16.0, 16.0, 0.0, 0.0, 16.0, 16.0]] * b)
        return [torch.randn(b, te, generator=g), ids]

    return [
        {"name": "default", "method": "forward", "input_names": names,
         "inputs": [torch.randn(2, 4, 8, 8, generator=g), torch.tensor(500, dtype=torch.int64),
                    torch.randn(2, 6, d, generator=g)] + extra(2)},
        {"name": "odd_resolution", "method": "forward", "input_names": names,
         "inputs": [torch.randn(1, 4, 7, 9, generator=g), torch.tensor([37.5]),
                    torch.randn(1, 6, d, generator=g)] + extra(1)},
    ]


def vae_cases(cfg: Dict[str, Any]) -> List[Dict[str, Any]]:
    g = _gen(200)
    return [
        {"name": "encode", "method": "encode", "input_names": ["x"], "inputs": [torch.randn(1, 3, 16, 16, generator=g)]},
        {"name": "decode", "method": "decode", "input_names": ["z"], "inputs": [torch.randn(1, 4, 8, 8, generator=g)]},
        {"name": "decode_odd", "method": "decode", "input_names": ["z"],
         "inputs": [torch.randn(1, 4, 5, 7, generator=g)]},
        {"name": "forward", "method": "forward", "input_names": ["x"],
         "inputs": [torch.randn(1, 3, 12, 12, generator=g)]},
    ]


def clip_cases(cfg: Dict[str, Any]) -> List[Dict[str, Any]]:
    g = _gen(300)
    eos = cfg["eos_token_id"] if cfg["eos_token_id"] != 2 else cfg["vocab_size"] - 1
    ids = torch.randint(3, 990, (2, 16), generator=g)
    ids[0, 5:] = eos
    ids[1, 11:] = eos
    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[0, 8:] = 0
    return [
        {"name": "no_mask", "method": "forward", "input_names": ["input_ids", "attention_mask"],
         "inputs": [ids, None]},
        {"name": "with_mask", "method": "forward", "input_names": ["input_ids", "attention_mask"],
         "inputs": [ids[:, :10], mask[:, :10]]},
    ]


def dit_cases(cfg: Dict[str, Any]) -> List[Dict[str, Any]]:
    g = _gen(400)
    names = ["hidden_states", "timestep", "class_labels"]
    return [
        {"name": "default", "method": "forward", "input_names": names,
         "inputs": [torch.randn(2, 4, 8, 8, generator=g), torch.tensor([5, 900]), torch.tensor([1, 10])]},
        {"name": "larger_resolution", "method": "forward", "input_names": names,
         "inputs": [torch.randn(1, 4, 12, 12, generator=g), torch.tensor(250), torch.tensor(3)]},
    ]


FIXTURES: List[Dict[str, Any]] = [
    {"name": "tiny-unet", "config": diffusers_config("UNet2DConditionModel", TINY_UNET), "seed": 1,
     "weights": "diffusion_pytorch_model.safetensors", "cases": unet_cases, "fused_copy": True},
    {"name": "tiny-unet-sdxl", "config": diffusers_config("UNet2DConditionModel", TINY_UNET_SDXL), "seed": 2,
     "weights": "diffusion_pytorch_model.safetensors", "cases": unet_cases},
    {"name": "tiny-vae", "config": diffusers_config("AutoencoderKL", TINY_VAE), "seed": 3,
     "weights": "diffusion_pytorch_model.safetensors", "cases": vae_cases},
    {"name": "tiny-clip-text", "config": transformers_config("CLIPTextModel", TINY_CLIP), "seed": 4,
     "weights": "model.safetensors", "cases": clip_cases, "fused_copy": True},
    {"name": "tiny-clip-text-proj", "config": transformers_config("CLIPTextModelWithProjection", TINY_CLIP_PROJ),
     "seed": 5, "weights": "model.safetensors", "cases": clip_cases},
    {"name": "tiny-dit", "config": diffusers_config("DiTTransformer2DModel", TINY_DIT), "seed": 6,
     "weights": "diffusion_pytorch_model.safetensors", "cases": dit_cases},
]


def _case_config(fx: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in fx["config"].items() if not k.startswith("_")}


def export_with_reference(src: str, dst: str, name: str, cases_fn: Callable, cfg: Dict[str, Any], fused: bool,
                          log: Callable = print) -> None:
    if os.path.isdir(dst):
        shutil.rmtree(dst)
    meta = exporter.export(src, dst, "float32", fused, log=lambda *_: None)
    eager, class_name, _, _ = exporter.load_component(src)
    set_fused_attention(False, eager)
    scripted = torch.jit.load(os.path.join(dst, "model.pt"))
    ref = make_reference(name, meta["class"], eager, scripted, cases_fn(cfg), fused)
    with open(os.path.join(dst, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, separators=(",", ":"))
        f.write("\n")
    log(f"{name}: {class_name} -> {dst}")


def write_tiny_clip_tokenizer(folder: str, vocab_size: int, max_length: int) -> None:
    """A CLIP BPE tokenizer cut to `vocab_size` ids (the 512 byte tokens, the first merges,
    then <|startoftext|> and <|endoftext|>), so prompts fit the tiny text encoder's embedding."""
    import gzip
    vocab_gz = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "clip", "bpe_simple_vocab_16e6.txt.gz")
    with gzip.open(vocab_gz, "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1:1 + vocab_size - 512 - 2]
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_chars = [chr(c) for c in cs]
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(tokens)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"model_max_length": max_length, "pad_token": "<|endoftext|>", "bos_token": "<|startoftext|>",
                   "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "do_lower_case": True}, f, indent=2)
        f.write("\n")


def build_pipeline(root: str, log: Callable = print) -> None:
    """tiny-sd: a StableDiffusionPipeline-layout folder reusing the tiny unet/vae/clip weights."""
    src = os.path.join(root, "diffusers", "tiny-sd")
    if os.path.isdir(src):
        shutil.rmtree(src)
    os.makedirs(src)
    for comp, fx_name in (("unet", "tiny-unet"), ("vae", "tiny-vae"), ("text_encoder", "tiny-clip-text")):
        shutil.copytree(os.path.join(root, "diffusers", fx_name), os.path.join(src, comp))
    clip_config = next(fx["config"] for fx in FIXTURES if fx["name"] == "tiny-clip-text")
    write_tiny_clip_tokenizer(os.path.join(src, "tokenizer"), clip_config["vocab_size"], clip_config["max_position_embeddings"])
    os.makedirs(os.path.join(src, "scheduler"))
    with open(os.path.join(src, "scheduler", "scheduler_config.json"), "w", encoding="utf-8") as f:
        json.dump(PNDM_CONFIG, f, indent=2)
        f.write("\n")
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": DIFFUSERS_VERSION,
             "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
             "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
    with open(os.path.join(src, "model_index.json"), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    dst = os.path.join(root, "models", "tiny-sd")
    if os.path.isdir(dst):
        shutil.rmtree(dst)
    exporter.export(src, dst, "float32", False, log=lambda *_: None)
    log(f"tiny-sd: pipeline -> {dst} (component references: models/tiny-unet, tiny-vae, tiny-clip-text)")


def write_json(path: str, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def build_ip2p(root: str, log: Callable = print) -> None:
    """tiny-ip2p: a StableDiffusionInstructPix2PixPipeline folder as `save_pretrained` lays out
    timbrooks/instruct-pix2pix (loaded with safety_checker=None): tiny-sd's VAE, text encoder and
    tokenizer, that model's Euler-ancestral scheduler config and CLIP image processor, and an 8-channel
    U-Net (4 noisy latent + 4 image-latent channels) with seeded random weights. Its conv_in is
    default-initialized over all 8 input channels, so the image channels matter (not the zeros of a
    freshly widened text-to-image U-Net)."""
    src = os.path.join(root, "diffusers", "tiny-ip2p")
    if os.path.isdir(src):
        shutil.rmtree(src)
    os.makedirs(src)
    unet_config = diffusers_config("UNet2DConditionModel", TINY_UNET_IP2P)
    write_diffusers_folder(os.path.join(src, "unet"), unet_config, random_model(unet_config, 7),
                           "diffusion_pytorch_model.safetensors")
    for comp, fx_name in (("vae", "tiny-vae"), ("text_encoder", "tiny-clip-text")):
        shutil.copytree(os.path.join(root, "diffusers", fx_name), os.path.join(src, comp))
    clip_config = next(fx["config"] for fx in FIXTURES if fx["name"] == "tiny-clip-text")
    write_tiny_clip_tokenizer(os.path.join(src, "tokenizer"), clip_config["vocab_size"], clip_config["max_position_embeddings"])
    for comp, file, obj in (("scheduler", "scheduler_config.json", EULER_ANCESTRAL_IP2P_CONFIG),
                            ("feature_extractor", "preprocessor_config.json", CLIP_IMAGE_PROCESSOR)):
        os.makedirs(os.path.join(src, comp))
        write_json(os.path.join(src, comp, file), obj)
    write_json(os.path.join(src, "model_index.json"), {
        "_class_name": "StableDiffusionInstructPix2PixPipeline", "_diffusers_version": DIFFUSERS_VERSION,
        "feature_extractor": ["transformers", "CLIPImageProcessor"], "requires_safety_checker": False,
        "safety_checker": [None, None], "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]})
    log(f"tiny-ip2p: InstructPix2Pix pipeline -> {src} (reference: scripts/fixtures/instruct_pix2pix_ref.py)")


def build(root: str, log: Callable = print) -> None:
    set_fused_attention(False)
    for fx in FIXTURES:
        config = fx["config"]
        model = random_model(config, fx["seed"])
        src = os.path.join(root, "diffusers", fx["name"])
        write_diffusers_folder(src, config, model, fx["weights"])
        cfg = _case_config(fx)
        export_with_reference(src, os.path.join(root, "models", fx["name"]), fx["name"], fx["cases"], cfg, False, log)
        if fx.get("fused_copy"):
            export_with_reference(src, os.path.join(root, "models", fx["name"] + "-fused"), fx["name"] + "-fused",
                                  fx["cases"], cfg, True, log)
        set_fused_attention(False)
    build_pipeline(root, log)
    build_ip2p(root, log)


def main(argv: Optional[List[str]] = None) -> int:
    if os.environ.get("PYTHONHASHSEED") != "0" and argv is None:
        # TorchScript's type-name mangling follows set/dict order: fix the hash seed so that
        # rebuilding gives byte-identical model.pt files (no churn in git)
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--root", default=os.path.join(os.path.dirname(here), "test", "fixtures"))
    parser.add_argument("--only", choices=["tiny-ip2p"], default=None,
                        help="rebuild only this fixture (it reuses the committed tiny-vae and tiny-clip-text)")
    args = parser.parse_args(argv)
    if args.only == "tiny-ip2p":
        set_fused_attention(False)
        build_ip2p(args.root)
    else:
        build(args.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
