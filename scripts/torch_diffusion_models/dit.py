"""DiTTransformer2DModel (class-conditional DiT, norm_type "ada_norm_zero") with diffusers'
config keys and state-dict names. Also accepts the legacy Transformer2DModel config of DiT
checkpoints (patch_size set, norm_type "ada_norm_zero").

forward(hidden_states (B, C, H, W), timestep (0-d or (B,), int or float), class_labels (0-d or (B,) int))
    -> (B, out_channels, H, W)   (learned sigma: out_channels = 2 * in_channels; split it outside)
Inputs are cast to the parameter dtype; the output is in the parameter dtype.
The 2-D sin-cos position embedding is diffusers' get_2d_sincos_pos_embed (base_size = sample_size //
patch_size); it is recomputed for other resolutions exactly as diffusers' PatchEmbed does.
"""
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .embeddings import TimestepEmbedding, Timesteps, get_2d_sincos_pos_embed
from .transformer_2d import Attention, FeedForward

DEFAULT_CONFIG: Dict[str, Any] = {
    "num_attention_heads": 16, "attention_head_dim": 72, "in_channels": 4, "out_channels": None, "num_layers": 28,
    "dropout": 0.0, "norm_num_groups": 32, "attention_bias": True, "sample_size": 32, "patch_size": 2,
    "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000, "upcast_attention": False,
    "norm_type": "ada_norm_zero", "norm_elementwise_affine": False, "norm_eps": 1e-5, "interpolation_scale": None,
}


class PatchEmbed(nn.Module):
    def __init__(self, height: int, width: int, patch_size: int, in_channels: int, embed_dim: int,
                 interpolation_scale: float = 1.0) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=(patch_size, patch_size), stride=patch_size,
                              bias=True)
        self.patch_size = patch_size
        self.height = height // patch_size
        self.width = width // patch_size
        self.base_size = height // patch_size
        self.interpolation_scale = float(interpolation_scale)
        grid = int(((height // patch_size) * (width // patch_size)) ** 0.5)
        pos = get_2d_sincos_pos_embed(embed_dim, [grid, grid], self.base_size, self.interpolation_scale,
                                      torch.device("cpu"))
        self.register_buffer("pos_embed", pos.unsqueeze(0), persistent=False)  # (1, N, D) float32

    def forward(self, latent: Tensor) -> Tensor:
        height = latent.shape[-2] // self.patch_size
        width = latent.shape[-1] // self.patch_size
        latent = self.proj(latent)  # (B, D, h, w)
        latent = latent.flatten(2).transpose(1, 2)  # (B, N, D)
        if self.height != height or self.width != width:
            pos_embed = get_2d_sincos_pos_embed(self.pos_embed.shape[-1], [height, width], self.base_size,
                                                self.interpolation_scale, latent.device).unsqueeze(0)
        else:
            pos_embed = self.pos_embed
        return (latent + pos_embed).to(latent.dtype)  # (B, N, D)


class LabelEmbedding(nn.Module):
    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float = 0.1) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)

    def forward(self, labels: Tensor) -> Tensor:
        return self.embedding_table(labels)  # (B, D)


class CombinedTimestepLabelEmbeddings(nn.Module):
    def __init__(self, num_classes: int, embedding_dim: int, class_dropout_prob: float = 0.1) -> None:
        super().__init__()
        self.time_proj = Timesteps(256, True, 1.0)
        self.timestep_embedder = TimestepEmbedding(256, embedding_dim)
        self.class_embedder = LabelEmbedding(num_classes, embedding_dim, class_dropout_prob)

    def forward(self, timestep: Tensor, class_labels: Tensor) -> Tensor:
        timesteps_proj = self.time_proj(timestep)  # (B, 256) float32
        dtype = self.timestep_embedder.linear_1.weight.dtype
        timesteps_emb = self.timestep_embedder(timesteps_proj.to(dtype))  # (B, D)
        return timesteps_emb + self.class_embedder(class_labels)  # (B, D)


class AdaLayerNormZero(nn.Module):
    def __init__(self, embedding_dim: int, num_embeddings: int) -> None:
        super().__init__()
        self.emb = CombinedTimestepLabelEmbeddings(num_embeddings, embedding_dim)
        self.silu = nn.SiLU()
        self.linear = nn.Linear(embedding_dim, 6 * embedding_dim, bias=True)
        self.norm = nn.LayerNorm(embedding_dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: Tensor, timestep: Tensor, class_labels: Tensor
                ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        emb = self.linear(self.silu(self.emb(timestep, class_labels)))  # (B, 6D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = emb.chunk(6, dim=1)
        x = self.norm(x) * (1 + scale_msa[:, None]) + shift_msa[:, None]  # (B, N, D)
        return x, gate_msa, shift_mlp, scale_mlp, gate_mlp


class DiTBlock(nn.Module):
    """BasicTransformerBlock with norm_type="ada_norm_zero" and no cross-attention."""

    def __init__(self, dim: int, heads: int, head_dim: int, num_embeds_ada_norm: int, activation_fn: str,
                 attention_bias: bool, norm_elementwise_affine: bool, norm_eps: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = AdaLayerNormZero(dim, num_embeds_ada_norm)
        self.attn1 = Attention(dim, None, heads, head_dim, dropout, attention_bias)
        self.norm3 = nn.LayerNorm(dim, norm_eps, norm_elementwise_affine)
        self.ff = FeedForward(dim, dropout=dropout, activation_fn=activation_fn)

    def forward(self, hidden_states: Tensor, timestep: Tensor, class_labels: Tensor) -> Tensor:
        norm_hidden_states, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(hidden_states, timestep,
                                                                                  class_labels)
        attn_output = self.attn1(norm_hidden_states, None)  # (B, N, D)
        hidden_states = gate_msa.unsqueeze(1) * attn_output + hidden_states
        norm_hidden_states = self.norm3(hidden_states)
        norm_hidden_states = norm_hidden_states * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        ff_output = self.ff(norm_hidden_states)  # (B, N, D)
        return gate_mlp.unsqueeze(1) * ff_output + hidden_states


def resolve_dit_config(config: Dict[str, Any]) -> Dict[str, Any]:
    cfg = dict(DEFAULT_CONFIG)
    legacy = config.get("_class_name") == "Transformer2DModel"
    if legacy:  # Transformer2DModel defaults differ
        cfg["norm_elementwise_affine"] = True
    cfg.update({k: v for k, v in config.items() if not k.startswith("_")})
    if cfg.get("norm_type") in (None, "layer_norm") and cfg.get("num_embeds_ada_norm") is not None:
        cfg["norm_type"] = "ada_norm_zero"
    if cfg["norm_type"] != "ada_norm_zero":
        raise NotImplementedError(f"DiT norm_type={cfg['norm_type']!r} is not supported")
    if cfg.get("patch_size") is None or cfg.get("num_embeds_ada_norm") is None:
        raise ValueError("DiT needs patch_size and num_embeds_ada_norm")
    if cfg.get("cross_attention_dim") is not None:
        raise NotImplementedError("DiT with cross_attention_dim is not supported")
    if legacy and cfg.get("interpolation_scale") is None:
        cfg["interpolation_scale"] = max(int(cfg["sample_size"]) // 64, 1)
    if not legacy:
        cfg["interpolation_scale"] = 1  # DiTTransformer2DModel ignores it
    return cfg


class DiTTransformer2DModel(nn.Module):
    __jit_ignored_attributes__ = ["config"]

    def __init__(self, config: Dict[str, Any]) -> None:
        super().__init__()
        cfg = resolve_dit_config(config)
        self.config = cfg
        heads, head_dim = int(cfg["num_attention_heads"]), int(cfg["attention_head_dim"])
        inner_dim = heads * head_dim
        self.patch_size = int(cfg["patch_size"])
        self.out_channels = int(cfg["in_channels"] if cfg["out_channels"] is None else cfg["out_channels"])
        size = int(cfg["sample_size"])
        self.pos_embed = PatchEmbed(size, size, self.patch_size, int(cfg["in_channels"]), inner_dim,
                                    float(cfg["interpolation_scale"]))
        self.transformer_blocks = nn.ModuleList([
            DiTBlock(inner_dim, heads, head_dim, int(cfg["num_embeds_ada_norm"]), cfg["activation_fn"],
                     bool(cfg["attention_bias"]), bool(cfg["norm_elementwise_affine"]), float(cfg["norm_eps"]),
                     float(cfg["dropout"]))
            for _ in range(int(cfg["num_layers"]))])
        self.norm_out = nn.LayerNorm(inner_dim, elementwise_affine=False, eps=1e-6)
        self.proj_out_1 = nn.Linear(inner_dim, 2 * inner_dim)
        self.proj_out_2 = nn.Linear(inner_dim, self.patch_size * self.patch_size * self.out_channels)

    def forward(self, hidden_states: Tensor, timestep: Tensor, class_labels: Tensor) -> Tensor:
        hidden_states = hidden_states.to(self.pos_embed.proj.weight.dtype)  # (B, C, H, W)
        batch = hidden_states.shape[0]
        if timestep.dim() == 0:
            timestep = timestep[None]
        timestep = timestep.to(hidden_states.device).expand(batch)  # (B,)
        if class_labels.dim() == 0:
            class_labels = class_labels[None]
        class_labels = class_labels.to(hidden_states.device).long().expand(batch)  # (B,)
        height = hidden_states.shape[-2] // self.patch_size
        width = hidden_states.shape[-1] // self.patch_size
        hidden_states = self.pos_embed(hidden_states)  # (B, N, D)
        for block in self.transformer_blocks:
            hidden_states = block(hidden_states, timestep, class_labels)
        conditioning = self.transformer_blocks[0].norm1.emb(timestep, class_labels)  # (B, D)
        shift, scale = self.proj_out_1(F.silu(conditioning)).chunk(2, dim=1)
        hidden_states = self.norm_out(hidden_states) * (1 + scale[:, None]) + shift[:, None]
        hidden_states = self.proj_out_2(hidden_states)  # (B, N, p*p*Cout)
        p = self.patch_size
        hidden_states = hidden_states.reshape(-1, height, width, p, p, self.out_channels)
        hidden_states = torch.einsum("nhwpqc->nchpwq", hidden_states)
        return hidden_states.reshape(-1, self.out_channels, height * p, width * p)  # (B, Cout, H, W)


def convert_dit_state_dict(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Drop the non-persistent position-embedding buffer if an old checkpoint saved it."""
    return {k: v for k, v in state_dict.items() if k != "pos_embed.pos_embed"}


def infer_dit_config(config: Dict[str, Any], keys) -> Dict[str, Any]:
    """Legacy configs may omit norm_elementwise_affine; the weights tell whether norm3 has parameters."""
    if "norm_elementwise_affine" in config:
        return config
    out = dict(config)
    out["norm_elementwise_affine"] = any(k.endswith("norm3.weight") for k in keys)
    return out


def initialize_dit_weights(model: DiTTransformer2DModel) -> DiTTransformer2DModel:
    """DiT's initialization (Peebles & Xie 2023, §3.2 "adaLN-Zero block" and the released
    ``DiT.initialize_weights``), on diffusers' parameter layout:

    - every Linear: Xavier-uniform weights, zero bias; the patch embedding likewise, its kernel
      flattened (as a Linear);
    - label-embedding tables and the timestep MLPs: N(0, 0.02);
    - adaLN-Zero: each block's modulation Linear (``norm1.linear``, which yields shift, scale and
      the gates) and the final layer's (``proj_out_1``) zero, and the output projection
      (``proj_out_2``) zero.

    With the gates at zero every block is the identity at initialization and the model's output
    is zero; diffusers' DiT carries a time/label embedder per block (the original shares one),
    so each block's is initialized the same way. Works in place; returns the model.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        proj = model.pos_embed.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        for block in model.transformer_blocks:
            emb = block.norm1.emb
            nn.init.normal_(emb.class_embedder.embedding_table.weight, std=0.02)
            nn.init.normal_(emb.timestep_embedder.linear_1.weight, std=0.02)
            nn.init.normal_(emb.timestep_embedder.linear_2.weight, std=0.02)
            nn.init.zeros_(block.norm1.linear.weight)
            nn.init.zeros_(block.norm1.linear.bias)
        for linear in (model.proj_out_1, model.proj_out_2):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)
    return model
