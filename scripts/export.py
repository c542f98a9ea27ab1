#!/usr/bin/python3
"""Import a diffusers-layout folder and export our TorchScript model directory.

Shipped in the npm package and run by `torch-diffusion convert` (which also writes the
directory's checksums.sha256); from a checkout it also runs directly:

usage: /usr/bin/python3 scripts/export.py --from DIR --to DIR [--dtype float32|float16|bfloat16]
                                          [--fused-attention] [--variant fp16] [--components unet,vae]

--from is one of
  * a pipeline folder: model_index.json + unet/ or transformer/, vae/, text_encoder[_2]/,
    tokenizer[_2]/, scheduler/ (each model folder: config.json + *.safetensors or *.bin,
    sharded *.index.json accepted, variant files such as *.fp16.safetensors accepted);
  * a single component folder (config.json + weights), exported straight into --to;
  * a Hugging Face cache folder (models--org--name/ with snapshots/), resolved to its snapshot;
  * anything else diffusers can load, only when diffusers happens to be importable (optional).
A pipeline's _class_name is kept, not checked: what converts is decided per component by its class,
so StableDiffusionPipeline, StableDiffusionInstructPix2PixPipeline (its U-Net's in_channels 8 come
from its config.json) and the like convert alike; components with no architecture here
(feature_extractor, safety_checker, ...) are skipped and listed under "skipped".

Output directory:
  model_index.json        the source model_index.json plus a "torch_diffusion" section
  <component>/model.pt    TorchScript module (torch.jit.script), loads in plain libtorch unless
                          --fused-attention (then torch_diffusion::attention must be registered)
  <component>/config.json the component's original config, unchanged
  <component>/torch_diffusion.json  class, dtype, methods and their inputs/outputs
  tokenizer*/ and scheduler/ copied unchanged.
With --dtype float16 a VAE whose config has force_upcast=true is kept in float32 (as diffusers
pipelines upcast it); the per-component dtype is recorded in torch_diffusion.json.
"""
import argparse
import json
import os
import shutil
import sys
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from safetensors_io import load_checkpoint  # noqa: E402
from torch_diffusion_models import (MODEL_CLASSES, build_model, class_name_of, load_state_dict_strict,  # noqa: E402
                                    set_fused_attention)
from torch_diffusion_models.signatures import methods_for  # noqa: E402

FORMAT_VERSION = 1
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
WEIGHT_STEMS = ("diffusion_pytorch_model", "model", "pytorch_model")
CANONICAL = {"Transformer2DModel": "DiTTransformer2DModel"}


class ExportError(RuntimeError):
    pass


def resolve_source(path: str) -> str:
    """Follow a Hugging Face cache folder (models--a--b) to its snapshot."""
    snaps = os.path.join(path, "snapshots")
    if os.path.isdir(snaps) and not os.path.exists(os.path.join(path, "model_index.json")):
        ref = os.path.join(path, "refs", "main")
        if os.path.isfile(ref):
            with open(ref, "r", encoding="utf-8") as f:
                cand = os.path.join(snaps, f.read().strip())
            if os.path.isdir(cand):
                return cand
        entries = [os.path.join(snaps, d) for d in os.listdir(snaps) if os.path.isdir(os.path.join(snaps, d))]
        if not entries:
            raise ExportError(f"{path}: snapshots/ is empty")
        return max(entries, key=os.path.getmtime)
    return path


def find_weights(folder: str, variant: Optional[str] = None) -> str:
    """Pick the weights file of a component folder (safetensors first, then .bin)."""
    files = set(os.listdir(folder))
    suffixes = [f".{variant}" if variant else ""]
    if variant:
        suffixes.append("")
    for ext in (".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json"):
        for suffix in suffixes:
            for stem in WEIGHT_STEMS:
                name = f"{stem}{suffix}{ext}"
                if name in files:
                    return os.path.join(folder, name)
    # only variant files present (e.g. *.fp16.safetensors) and no --variant given
    for ext in (".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json"):
        found = sorted(f for f in files if f.endswith(ext) and f.split(".")[0] in WEIGHT_STEMS)
        if found:
            return os.path.join(folder, found[0])
    found = sorted(f for f in files if f.endswith(".safetensors"))
    if len(found) == 1:
        return os.path.join(folder, found[0])
    raise ExportError(f"{folder}: no weights found (expected diffusion_pytorch_model.safetensors, "
                      f"model.safetensors or *.bin); files: {sorted(files)}")


def read_json(path: str) -> Dict[str, Any]:
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def write_json(path: str, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def component_dtype(class_name: str, config: Dict[str, Any], dtype: torch.dtype) -> torch.dtype:
    if class_name == "AutoencoderKL" and dtype == torch.float16 and config.get("force_upcast", True):
        return torch.float32
    return dtype


def load_component(folder: str, class_name: Optional[str] = None, variant: Optional[str] = None
                   ) -> Tuple[torch.nn.Module, str, Dict[str, Any], str]:
    """Build our module from <folder>/config.json and load its weights strictly."""
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise ExportError(f"{folder}: missing config.json")
    config = read_json(config_path)
    name = class_name or class_name_of(config)
    if name not in MODEL_CLASSES:
        raise ExportError(f"{folder}: model class {name!r} is not supported")
    weights = find_weights(folder, variant)
    state_dict = load_checkpoint(weights)
    model = build_model(config, name, state_dict.keys())
    load_state_dict_strict(model, state_dict, name, sources=[weights])
    model.eval()
    return model, name, config, weights


def export_module(model: torch.nn.Module, class_name: str, config: Dict[str, Any], out_dir: str,
                  dtype: torch.dtype, fused: bool, source: str = "") -> Dict[str, Any]:
    """Cast, script and save one module; returns its metadata."""
    os.makedirs(out_dir, exist_ok=True)
    target = component_dtype(class_name, config, dtype)
    model = model.to(target).eval()
    set_fused_attention(fused, model)
    scripted = torch.jit.script(model)
    canonical = CANONICAL.get(class_name, class_name)
    meta = {
        "format_version": FORMAT_VERSION,
        "class": canonical,
        "source_class": class_name,
        "file": "model.pt",
        "dtype": str(target).replace("torch.", ""),
        "fused_attention": bool(fused),
        "custom_ops": ["torch_diffusion::attention"] if fused else [],
        "methods": methods_for(canonical),
    }
    if source:
        meta["source_weights"] = os.path.basename(source)
    meta_text = json.dumps(meta, indent=2)
    scripted.save(os.path.join(out_dir, "model.pt"), _extra_files={"torch_diffusion.json": meta_text})
    write_json(os.path.join(out_dir, "config.json"), config)
    with open(os.path.join(out_dir, "torch_diffusion.json"), "w", encoding="utf-8") as f:
        f.write(meta_text + "\n")
    return meta


def export_component(src: str, dst: str, dtype: torch.dtype, fused: bool, class_name: Optional[str] = None,
                     variant: Optional[str] = None) -> Dict[str, Any]:
    model, name, config, weights = load_component(src, class_name, variant)
    return export_module(model, name, config, dst, dtype, fused, weights)


def copy_folder(src: str, dst: str) -> List[str]:
    os.makedirs(dst, exist_ok=True)
    copied = []
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if os.path.isfile(path):
            shutil.copyfile(path, os.path.join(dst, name))
            copied.append(name)
    return copied


def _kind(name: str, entry: Any, folder: str) -> str:
    cls = entry[1] if isinstance(entry, (list, tuple)) and len(entry) == 2 else None
    if cls is None:
        return "none"
    if "Tokenizer" in str(cls) or name.startswith("tokenizer"):
        return "tokenizer"
    if "Scheduler" in str(cls) or name == "scheduler":
        return "scheduler"
    if cls in MODEL_CLASSES:
        return "model"
    config_path = os.path.join(folder, "config.json")
    if os.path.isfile(config_path) and class_name_of(read_json(config_path), cls) in MODEL_CLASSES:
        return "model"
    return "unsupported"


def export_pipeline(src: str, dst: str, dtype: torch.dtype, fused: bool, variant: Optional[str] = None,
                    only: Optional[List[str]] = None, log=print) -> Dict[str, Any]:
    index = read_json(os.path.join(src, "model_index.json"))
    os.makedirs(dst, exist_ok=True)
    components: Dict[str, Any] = {}
    skipped: Dict[str, str] = {}
    for name, entry in index.items():
        if name.startswith("_") or (only and name not in only):
            continue
        folder = os.path.join(src, name)
        kind = _kind(name, entry, folder)
        if kind == "none":
            continue
        if not os.path.isdir(folder):
            skipped[name] = "folder missing"
            log(f"skip {name}: folder missing")
            continue
        if kind == "model":
            log(f"export {name} ({entry[1]})")
            cls = entry[1] if entry[1] in MODEL_CLASSES else None
            components[name] = export_component(folder, os.path.join(dst, name), dtype, fused, cls, variant)
        elif kind == "tokenizer":
            files = copy_folder(folder, os.path.join(dst, name))
            components[name] = {"class": entry[1], "files": files}
            log(f"copy {name}")
        elif kind == "scheduler":
            cfg = os.path.join(folder, "scheduler_config.json")
            if not os.path.isfile(cfg):
                raise ExportError(f"{folder}: missing scheduler_config.json")
            os.makedirs(os.path.join(dst, name), exist_ok=True)
            shutil.copyfile(cfg, os.path.join(dst, name, "scheduler_config.json"))
            components[name] = {"class": entry[1], "config": f"{name}/scheduler_config.json"}
            log(f"copy {name}")
        else:
            skipped[name] = f"class {entry[1]!r} is not supported"
            log(f"skip {name}: {skipped[name]}")
    out_index = dict(index)
    out_index["torch_diffusion"] = {
        "format_version": FORMAT_VERSION, "dtype": str(dtype).replace("torch.", ""), "fused_attention": fused,
        "components": components, "skipped": skipped,
    }
    write_json(os.path.join(dst, "model_index.json"), out_index)
    return out_index


def export_via_diffusers(src: str, dst: str, dtype: torch.dtype, fused: bool, log=print) -> Dict[str, Any]:
    """Optional path: let diffusers read a folder/file we cannot, then export its components."""
    try:
        import diffusers  # type: ignore
    except ImportError:
        raise ExportError(f"{src}: not a diffusers folder (no model_index.json or config.json), and diffusers "
                          "is not installed to read it") from None
    pipe = diffusers.DiffusionPipeline.from_pretrained(src) if os.path.isdir(src) else \
        diffusers.StableDiffusionPipeline.from_single_file(src)
    os.makedirs(dst, exist_ok=True)
    components: Dict[str, Any] = {}
    for name, module in pipe.components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        cls = type(module).__name__
        if cls not in MODEL_CLASSES:
            continue
        config = dict(module.config) if not hasattr(module.config, "to_dict") else module.config.to_dict()
        config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}
        config.setdefault("_class_name", cls)
        ours = build_model(config, cls, module.state_dict().keys())
        load_state_dict_strict(ours, module.state_dict(), cls, sources=[f"{src}:{name}"])
        components[name] = export_module(ours.eval(), cls, config, os.path.join(dst, name), dtype, fused)
        log(f"export {name} ({cls}) via diffusers")
    index = {"_class_name": type(pipe).__name__, "torch_diffusion": {
        "format_version": FORMAT_VERSION, "dtype": str(dtype).replace("torch.", ""), "fused_attention": fused,
        "components": components, "skipped": {}}}
    write_json(os.path.join(dst, "model_index.json"), index)
    return index


def export(src: str, dst: str, dtype: str = "float32", fused: bool = False, variant: Optional[str] = None,
           only: Optional[List[str]] = None, log=print) -> Dict[str, Any]:
    if dtype not in DTYPES:
        raise ExportError(f"--dtype must be one of {sorted(DTYPES)}")
    src = resolve_source(src)
    tdtype = DTYPES[dtype]
    if os.path.isfile(os.path.join(src, "model_index.json")):
        return export_pipeline(src, dst, tdtype, fused, variant, only, log)
    if os.path.isfile(os.path.join(src, "config.json")):
        log(f"export single component {src}")
        return export_component(src, dst, tdtype, fused, None, variant)
    if os.path.isfile(os.path.join(src, "scheduler_config.json")):
        os.makedirs(dst, exist_ok=True)
        shutil.copyfile(os.path.join(src, "scheduler_config.json"), os.path.join(dst, "scheduler_config.json"))
        return {"class": "scheduler", "config": "scheduler_config.json"}
    return export_via_diffusers(src, dst, tdtype, fused, log)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="src", required=True, help="diffusers folder (pipeline or component)")
    parser.add_argument("--to", dest="dst", required=True, help="output model directory")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--fused-attention", action="store_true",
                        help="record torch_diffusion::attention in the graphs (needs the addon's kernel)")
    parser.add_argument("--variant", default=None, help="weights variant to prefer, e.g. fp16")
    parser.add_argument("--components", default=None, help="comma-separated subset of pipeline components")
    args = parser.parse_args(argv)
    only = [c.strip() for c in args.components.split(",")] if args.components else None
    try:
        export(args.src, args.dst, args.dtype, args.fused_attention, args.variant, only)
    except Exception as exc:  # noqa: BLE001 - report any failure as one clear line
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
