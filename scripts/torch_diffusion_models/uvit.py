"""U-ViT of Simple Diffusion (Hoogeboom, Heek & Salimans 2023, "simple diffusion: End-to-end
diffusion for high resolution images", §3.4 and Fig. 7), class-conditional, in pixel space:

- convolutional ResBlocks at the high resolutions (no attention there), each level's outputs kept
  as skip connections, strided-conv downsampling between levels;
- at the lowest resolution a stack of transformer blocks (self-attention + MLP on the flattened
  feature map, fixed 2-D sin-cos position embedding); dropout only here;
- nearest-neighbour upsampling + conv, ResBlocks taking the matching skip (concatenated).

Conditioning: sinusoidal timestep embedding -> MLP, plus a class embedding (label
``num_class_embeds`` is the null class for classifier-free guidance); ResBlocks take it as a
GroupNorm scale/shift (improved DDPM's ``use_scale_shift_norm``), transformer blocks as a
LayerNorm scale/shift before attention and before the MLP. Those conditioning choices are ours:
the paper gives the block layout, not every conditioning detail.

forward(sample (B, C, H, W), timestep (0-d or (B,)), class_labels (0-d or (B,) int))
    -> (B, out_channels, H, W)
H and W must be multiples of 2 ** len(block_out_channels).

Config keys (our own class, "UViT2DModel"; no diffusers counterpart):
  sample_size, in_channels, out_channels, block_out_channels (conv level widths, from the input
  resolution down), layers_per_block (ResBlocks per level and direction), transformer_width,
  transformer_layers, num_attention_heads, mlp_ratio, dropout (transformer blocks only),
  num_class_embeds, norm_num_groups, time_embed_dim.
"""
from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import AttentionKernel
from .embeddings import TimestepEmbedding, Timesteps, get_2d_sincos_pos_embed
from .signatures import METHODS, _t

DEFAULT_CONFIG: Dict[str, Any] = {
    "sample_size": 64, "in_channels": 1, "out_channels": 1, "block_out_channels": [16, 32, 64], "layers_per_block": 1,
    "transformer_width": 128, "transformer_layers": 4, "num_attention_heads": 4, "mlp_ratio": 4, "dropout": 0.1,
    "num_class_embeds": 10, "norm_num_groups": 8, "time_embed_dim": None,
}

# The exported signature (registered here so this architecture needs no edit of signatures.py).
METHODS.setdefault("UViT2DModel", {
    "forward": {
        "inputs": [_t("sample", "(B, in_channels, H, W)", note="cast to the model dtype inside"),
                   _t("timestep", "() or (B,) or (1,)", "int64|float", note="broadcast to B"),
                   _t("class_labels", "() or (B,) or (1,)", "int64", note="num_class_embeds = null class")],
        "outputs": [_t("sample", "(B, out_channels, H, W)", note="model dtype")],
    },
})


def resolve_uvit_config(config: Dict[str, Any]) -> Dict[str, Any]:
    cfg = dict(DEFAULT_CONFIG)
    cfg.update({k: v for k, v in config.items() if not k.startswith("_")})
    if cfg["time_embed_dim"] is None:
        cfg["time_embed_dim"] = 4 * int(cfg["block_out_channels"][0])
    if int(cfg["transformer_width"]) % int(cfg["num_attention_heads"]) != 0:
        raise ValueError("UViT2DModel: transformer_width must be a multiple of num_attention_heads")
    if int(cfg["sample_size"]) % (2 ** len(cfg["block_out_channels"])) != 0:
        raise ValueError("UViT2DModel: sample_size must be a multiple of 2 ** len(block_out_channels)")
    return cfg


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, scale/shift from the conditioning, GroupNorm-SiLU-conv, plus the skip."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=1e-5)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=1e-5)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, Cout, H, W)
        scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (B, Cout, 1, 1) x2
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))  # (B, Cout, H, W)
        return self.skip(x) + h


class DownLevel(nn.Module):
    """ResBlocks at one resolution (each output kept as a skip), then a stride-2 conv."""

    def __init__(self, channels: int, next_channels: int, layers: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResBlock(channels, channels, emb_dim, groups) for _ in range(layers)])
        self.downsample = nn.Conv2d(channels, next_channels, 3, stride=2, padding=1)

    def forward(self, h: Tensor, emb: Tensor, skips: List[Tensor]) -> Tensor:
        for resnet in self.resnets:
            h = resnet(h, emb)  # (B, C, H, W)
            skips.append(h)
        return self.downsample(h)  # (B, C_next, H/2, W/2)


class UpLevel(nn.Module):
    """Nearest x2 + conv, then ResBlocks each taking the matching skip (concatenated)."""

    def __init__(self, channels: int, prev_channels: int, layers: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.upsample = nn.Conv2d(prev_channels, channels, 3, padding=1)
        self.resnets = nn.ModuleList([ResBlock(2 * channels, channels, emb_dim, groups) for _ in range(layers)])

    def forward(self, h: Tensor, emb: Tensor, skips: List[Tensor]) -> Tensor:
        h = self.upsample(F.interpolate(h, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)
        for resnet in self.resnets:
            h = resnet(torch.cat([h, skips.pop()], dim=1), emb)  # (B, C, 2H, 2W)
        return h


class TransformerBlock(nn.Module):
    """Pre-LN self-attention and MLP with conditioning scale/shift; dropout on both branches."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)
        self.modulation = nn.Linear(emb_dim, 4 * dim)
        self.dropout = nn.Dropout(dropout)
        self.kernel = AttentionKernel()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        batch, tokens, dim = x.shape[0], x.shape[1], x.shape[2]
        shift1, scale1, shift2, scale2 = self.modulation(F.silu(emb)).chunk(4, dim=1)  # (B, D) x4
        h = self.norm1(x) * (1 + scale1[:, None]) + shift1[:, None]  # (B, N, D)
        qkv = self.qkv(h).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, H, N, d)
        attn = self.kernel(qkv[0], qkv[1], qkv[2], None, None)  # (B, H, N, d)
        attn = attn.transpose(1, 2).reshape(batch, tokens, dim).to(x.dtype)  # (B, N, D)
        x = x + self.dropout(self.proj(attn))
        h = self.norm2(x) * (1 + scale2[:, None]) + shift2[:, None]  # (B, N, D)
        return x + self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(h)))))  # (B, N, D)


class UViT2DModel(nn.Module):
    __jit_ignored_attributes__ = ["config"]

    def __init__(self, config: Dict[str, Any]) -> None:
        super().__init__()
        cfg = resolve_uvit_config(config)
        self.config = cfg
        widths = [int(c) for c in cfg["block_out_channels"]]
        layers = int(cfg["layers_per_block"])
        groups = int(cfg["norm_num_groups"])
        emb_dim = int(cfg["time_embed_dim"])
        width = int(cfg["transformer_width"])
        self.num_levels = len(widths)
        self.time_proj = Timesteps(widths[0], True, 0.0)
        self.time_embedding = TimestepEmbedding(widths[0], emb_dim)
        self.class_embedding = nn.Embedding(int(cfg["num_class_embeds"]) + 1, emb_dim)
        self.conv_in = nn.Conv2d(int(cfg["in_channels"]), widths[0], 3, padding=1)
        nexts = widths[1:] + [width]
        self.down_levels = nn.ModuleList([DownLevel(c, n, layers, emb_dim, groups) for c, n in zip(widths, nexts)])
        grid = int(cfg["sample_size"]) // 2 ** len(widths)
        self.grid = grid
        pos = get_2d_sincos_pos_embed(width, [grid, grid], grid, 1.0, torch.device("cpu"))
        self.register_buffer("pos_embed", pos.unsqueeze(0), persistent=False)  # (1, N, D) float32
        self.transformer_blocks = nn.ModuleList([
            TransformerBlock(width, int(cfg["num_attention_heads"]), int(cfg["mlp_ratio"]), emb_dim, float(cfg["dropout"]))
            for _ in range(int(cfg["transformer_layers"]))])
        self.norm_mid = nn.LayerNorm(width, eps=1e-6)
        self.up_levels = nn.ModuleList([UpLevel(c, n, layers, emb_dim, groups)
                                        for c, n in reversed(list(zip(widths, nexts)))])
        self.norm_out = nn.GroupNorm(groups, widths[0], eps=1e-5)
        self.conv_out = nn.Conv2d(widths[0], int(cfg["out_channels"]), 3, padding=1)

    def forward(self, sample: Tensor, timestep: Tensor, class_labels: Tensor) -> Tensor:
        sample = sample.to(self.conv_in.weight.dtype)  # (B, C, H, W)
        batch = sample.shape[0]
        if timestep.dim() == 0:
            timestep = timestep[None]
        timestep = timestep.to(sample.device).expand(batch)  # (B,)
        if class_labels.dim() == 0:
            class_labels = class_labels[None]
        class_labels = class_labels.to(sample.device).long().expand(batch)  # (B,)
        t_emb = self.time_proj(timestep).to(sample.dtype)  # (B, C0)
        emb = self.time_embedding(t_emb) + self.class_embedding(class_labels)  # (B, E)

        h = self.conv_in(sample)  # (B, C0, H, W)
        skips: List[Tensor] = []
        for level in self.down_levels:
            h = level(h, emb, skips)
        height, width = h.shape[2], h.shape[3]
        tokens = h.flatten(2).transpose(1, 2)  # (B, N, D)
        if height == self.grid and width == self.grid:
            pos = self.pos_embed
        else:
            pos = get_2d_sincos_pos_embed(tokens.shape[-1], [height, width], self.grid, 1.0, tokens.device).unsqueeze(0)
        tokens = tokens + pos.to(tokens.dtype)
        for block in self.transformer_blocks:
            tokens = block(tokens, emb)
        tokens = self.norm_mid(tokens)
        h = tokens.transpose(1, 2).reshape(batch, -1, height, width)  # (B, D, h, w)
        for level in self.up_levels:
            h = level(h, emb, skips)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, Cout, H, W)


def initialize_uvit_weights(model: UViT2DModel) -> UViT2DModel:
    """Improved DDPM's zero-initialized outputs (its ``zero_module``): each ResBlock's second conv,
    each transformer block's attention and MLP output projections and the final conv start at
    zero, so every residual branch, and the model's output, is zero at initialization; the
    class embedding is N(0, 0.02). Works in place; returns the model."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ResBlock):
                nn.init.zeros_(module.conv2.weight)
                nn.init.zeros_(module.conv2.bias)
            elif isinstance(module, TransformerBlock):
                for linear in (module.proj, module.fc2):
                    nn.init.zeros_(linear.weight)
                    nn.init.zeros_(linear.bias)
        nn.init.normal_(model.class_embedding.weight, std=0.02)
        nn.init.zeros_(model.conv_out.weight)
        nn.init.zeros_(model.conv_out.bias)
    return model
