"""Activations, timestep embeddings and sin-cos position embeddings (diffusers numerics)."""
import math
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def get_activation(name: str) -> nn.Module:
    """diffusers' get_activation: swish/silu, mish, gelu, relu."""
    name = name.lower()
    if name in ("swish", "silu"):
        return nn.SiLU()
    if name == "mish":
        return nn.Mish()
    if name == "gelu":
        return nn.GELU()
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unsupported activation function: {name}")


def get_timestep_embedding(timesteps: Tensor, embedding_dim: int, flip_sin_to_cos: bool = False,
                           downscale_freq_shift: float = 1.0, scale: float = 1.0,
                           max_period: int = 10000) -> Tensor:
    """Sinusoidal embedding of 1-D timesteps -> (N, embedding_dim) float32, as diffusers."""
    half_dim = embedding_dim // 2
    exponent = -math.log(max_period) * torch.arange(
        start=0, end=half_dim, dtype=torch.float32, device=timesteps.device)  # (half,)
    exponent = exponent / (half_dim - downscale_freq_shift)
    emb = torch.exp(exponent)  # (half,)
    emb = timesteps[:, None].float() * emb[None, :]  # (N, half)
    emb = scale * emb
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)  # (N, 2*half)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half_dim:], emb[:, :half_dim]], dim=-1)
    if embedding_dim % 2 == 1:
        emb = F.pad(emb, [0, 1, 0, 0])
    return emb


class Timesteps(nn.Module):
    def __init__(self, num_channels: int, flip_sin_to_cos: bool, downscale_freq_shift: float,
                 scale: float = 1.0) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.flip_sin_to_cos = flip_sin_to_cos
        self.downscale_freq_shift = float(downscale_freq_shift)
        self.scale = float(scale)

    def forward(self, timesteps: Tensor) -> Tensor:
        return get_timestep_embedding(timesteps, self.num_channels, self.flip_sin_to_cos,
                                      self.downscale_freq_shift, self.scale)


class TimestepEmbedding(nn.Module):
    """linear_1 -> act -> linear_2 (no cond_proj / post_act)."""

    def __init__(self, in_channels: int, time_embed_dim: int, act_fn: str = "silu",
                 out_dim: int = -1) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.act = get_activation(act_fn)
        self.linear_2 = nn.Linear(time_embed_dim, out_dim if out_dim > 0 else time_embed_dim)

    def forward(self, sample: Tensor) -> Tensor:
        sample = self.linear_1(sample)  # (N, E)
        sample = self.act(sample)
        return self.linear_2(sample)  # (N, E)


def sincos_1d_from_grid(embed_dim: int, pos: Tensor) -> Tensor:
    """(M,) positions -> (M, embed_dim) float64, [sin | cos]."""
    omega = torch.arange(embed_dim // 2, dtype=torch.float64, device=pos.device)
    omega = omega / (embed_dim / 2.0)
    omega = 1.0 / torch.pow(10000.0, omega)  # (D/2,)
    out = pos.reshape(-1).to(torch.float64)[:, None] * omega[None, :]  # (M, D/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (M, D)


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: List[int], base_size: int,
                            interpolation_scale: float, device: torch.device) -> Tensor:
    """diffusers' get_2d_sincos_pos_embed for a (H, W) patch grid -> (H*W, embed_dim) float32.

    Grid values are computed in float32, the embedding in float64, as diffusers does.
    As in diffusers, the first half of the channels encodes the *column* coordinate
    and the second half the row coordinate (meshgrid with w first).
    """
    gh = grid_size[0]
    gw = grid_size[1]
    grid_h = torch.arange(gh, dtype=torch.float32, device=device) / (gh / base_size) / interpolation_scale
    grid_w = torch.arange(gw, dtype=torch.float32, device=device) / (gw / base_size) / interpolation_scale
    g0 = grid_w[None, :].expand(gh, gw)  # (H, W) column coordinate
    g1 = grid_h[:, None].expand(gh, gw)  # (H, W) row coordinate
    emb_a = sincos_1d_from_grid(embed_dim // 2, g0)  # (H*W, D/2)
    emb_b = sincos_1d_from_grid(embed_dim // 2, g1)  # (H*W, D/2)
    return torch.cat([emb_a, emb_b], dim=1).float()  # (H*W, D)
