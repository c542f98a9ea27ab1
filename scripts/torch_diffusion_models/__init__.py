"""Our own PyTorch definitions of diffusion-model architectures with diffusers' / transformers'
config keys and state-dict names (UNet2DConditionModel, AutoencoderKL, CLIP text encoders,
DiTTransformer2DModel; and Simple Diffusion's UViT2DModel, ours), TorchScript-exportable, with a single
attention entry point."""
from .attention import (OP_NAME, OP_SCHEMA, AttentionKernel, attention, attention_op_defined, ensure_attention_op,
                        fused_attention, fused_attention_enabled, math_attention, set_fused_attention)
from .autoencoder_kl import AutoencoderKL
from .clip_text import CLIPTextModel, CLIPTextModelWithProjection
from .dit import DiTTransformer2DModel
from .loading import (MODEL_CLASSES, StateDictMismatchError, build_model, class_name_of, convert_state_dict,
                      from_pretrained, load_state_dict_strict)
from .unet_2d_condition import UNet2DConditionModel
from .uvit import UViT2DModel

__all__ = [
    "OP_NAME", "OP_SCHEMA", "AttentionKernel", "attention", "attention_op_defined", "ensure_attention_op",
    "fused_attention", "fused_attention_enabled",
    "math_attention", "set_fused_attention", "AutoencoderKL", "CLIPTextModel", "CLIPTextModelWithProjection",
    "DiTTransformer2DModel", "UNet2DConditionModel", "UViT2DModel", "MODEL_CLASSES", "StateDictMismatchError",
    "build_model", "class_name_of", "convert_state_dict", "from_pretrained", "load_state_dict_strict",
]
