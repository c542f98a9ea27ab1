"""Building models from diffusers/transformers configs and strict state-dict loading."""
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .autoencoder_kl import AutoencoderKL, convert_legacy_vae_state_dict
from .clip_text import CLIPTextModel, CLIPTextModelWithProjection, convert_clip_state_dict
from .dit import DiTTransformer2DModel, convert_dit_state_dict, infer_dit_config
from .unet_2d_condition import UNet2DConditionModel
from .uvit import UViT2DModel

# class name -> (our class, state-dict converter)
MODEL_CLASSES = {
    "UNet2DConditionModel": (UNet2DConditionModel, None),
    "AutoencoderKL": (AutoencoderKL, convert_legacy_vae_state_dict),
    "CLIPTextModel": (CLIPTextModel, convert_clip_state_dict),
    "CLIPTextModelWithProjection": (CLIPTextModelWithProjection, convert_clip_state_dict),
    "DiTTransformer2DModel": (DiTTransformer2DModel, convert_dit_state_dict),
    "Transformer2DModel": (DiTTransformer2DModel, convert_dit_state_dict),  # legacy DiT configs
    "UViT2DModel": (UViT2DModel, None),  # ours: Simple Diffusion's U-ViT (no diffusers counterpart)
}


class StateDictMismatchError(RuntimeError):
    """Raised when a checkpoint does not match the architecture built from its config."""

    def __init__(self, class_name: str, sources: Sequence[str], missing: List[str], unexpected: List[str],
                 shape_mismatch: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]) -> None:
        self.class_name = class_name
        self.sources = list(sources)
        self.missing = missing
        self.unexpected = unexpected
        self.shape_mismatch = shape_mismatch
        super().__init__(self._message())

    def _message(self, limit: int = 25) -> str:
        def fmt(keys: List[str]) -> str:
            shown = "\n    ".join(keys[:limit])
            more = f"\n    ... and {len(keys) - limit} more" if len(keys) > limit else ""
            return f"\n    {shown}{more}"

        parts = [f"state dict from {', '.join(self.sources) or '<memory>'} does not match {self.class_name}:"]
        if self.missing:
            parts.append(f"  missing keys ({len(self.missing)}):{fmt(self.missing)}")
        if self.unexpected:
            parts.append(f"  unexpected keys ({len(self.unexpected)}):{fmt(self.unexpected)}")
        if self.shape_mismatch:
            lines = [f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in self.shape_mismatch]
            parts.append(f"  shape mismatches ({len(lines)}):{fmt(lines)}")
        return "\n".join(parts)


def class_name_of(config: Dict[str, Any], fallback: Optional[str] = None) -> str:
    """diffusers configs carry _class_name; transformers configs carry architectures."""
    if config.get("_class_name"):
        return str(config["_class_name"])
    arch = config.get("architectures")
    if arch:
        return str(arch[0])
    if fallback:
        return fallback
    raise ValueError("config has neither _class_name nor architectures; cannot tell the model class")


def build_model(config: Dict[str, Any], class_name: Optional[str] = None,
                state_dict_keys: Optional[Iterable[str]] = None) -> nn.Module:
    name = class_name or class_name_of(config)
    if name not in MODEL_CLASSES:
        raise NotImplementedError(f"model class {name!r} is not supported (supported: {sorted(MODEL_CLASSES)})")
    cls, _ = MODEL_CLASSES[name]
    if cls is DiTTransformer2DModel:
        if name == "Transformer2DModel" and config.get("patch_size") is None:
            raise NotImplementedError("Transformer2DModel is supported only as a DiT (patch_size set)")
        config = dict(config)
        config.setdefault("_class_name", name)
        if state_dict_keys is not None:
            config = infer_dit_config(config, list(state_dict_keys))
    return cls(config)


def convert_state_dict(class_name: str, state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    converter = MODEL_CLASSES[class_name][1] if class_name in MODEL_CLASSES else None
    return converter(state_dict) if converter is not None else dict(state_dict)


def load_state_dict_strict(model: nn.Module, state_dict: Dict[str, Tensor], class_name: str = "",
                           sources: Sequence[str] = ()) -> None:
    """Load with renames for legacy names; raise StateDictMismatchError naming keys and files."""
    name = class_name or type(model).__name__
    state_dict = convert_state_dict(name, state_dict)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in expected)
    shapes = sorted((k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in expected.items()
                    if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape))
    if missing or unexpected or shapes:
        raise StateDictMismatchError(name, sources, missing, unexpected, shapes)
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(state_dict[key].to(target.dtype))


def _safetensors_io():
    try:
        import safetensors_io  # scripts/ on sys.path (the usual case)
    except ImportError:
        import importlib.util
        import os
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "safetensors_io.py")
        spec = importlib.util.spec_from_file_location("safetensors_io", path)
        safetensors_io = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(safetensors_io)
    return safetensors_io


def from_pretrained(folder: str, variant: Optional[str] = None, expected: Optional[type] = None) -> nn.Module:
    """Build our module from a diffusers/transformers component folder (config.json + weights) and
    load its weights strictly. Returns it in eval mode with float32 parameters (fp16/bf16 files are
    upcast on load); use .to(dtype) for another precision."""
    import json
    import os
    import sys
    scripts_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if scripts_dir not in sys.path:
        sys.path.insert(0, scripts_dir)
    from export import find_weights  # shared weights-file resolution
    with open(os.path.join(folder, "config.json"), "r", encoding="utf-8") as f:
        config = json.load(f)
    name = class_name_of(config)
    weights = find_weights(folder, variant)
    state_dict = _safetensors_io().load_checkpoint(weights)
    model = build_model(config, name, state_dict.keys())
    if expected is not None and not isinstance(model, expected):
        raise TypeError(f"{folder} holds a {name}, not a {expected.__name__}")
    load_state_dict_strict(model, state_dict, name, sources=[weights])
    return model.eval()


def _attach_from_pretrained() -> None:
    for cls, _ in MODEL_CLASSES.values():
        def method(klass, folder: str, variant: Optional[str] = None) -> nn.Module:
            return from_pretrained(folder, variant, expected=klass)
        cls.from_pretrained = classmethod(method)


_attach_from_pretrained()
