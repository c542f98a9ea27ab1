"""ResnetBlock2D, Downsample2D, Upsample2D with diffusers' parameter names and numerics."""
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .embeddings import get_activation


class ResnetBlock2D(nn.Module):
    """time_embedding_norm="default", output_scale_factor, optional time_emb_proj / conv_shortcut."""

    def __init__(self, in_channels: int, out_channels: Optional[int] = None, temb_channels: Optional[int] = 512,
                 groups: int = 32, groups_out: Optional[int] = None, eps: float = 1e-6,
                 non_linearity: str = "swish", output_scale_factor: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        groups_out = groups if groups_out is None else groups_out
        self.output_scale_factor = float(output_scale_factor)
        self.norm1 = nn.GroupNorm(num_groups=groups, num_channels=in_channels, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels) if temb_channels is not None else None
        self.norm2 = nn.GroupNorm(num_groups=groups_out, num_channels=out_channels, eps=eps, affine=True)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.nonlinearity = get_activation(non_linearity)
        if in_channels != out_channels:
            self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)
        else:
            self.conv_shortcut = None

    def forward(self, input_tensor: Tensor, temb: Optional[Tensor]) -> Tensor:
        hidden_states = self.norm1(input_tensor)  # (B, Cin, H, W)
        hidden_states = self.nonlinearity(hidden_states)
        hidden_states = self.conv1(hidden_states)  # (B, Cout, H, W)
        if self.time_emb_proj is not None:
            if temb is not None:
                t = self.nonlinearity(temb)
                t = self.time_emb_proj(t)[:, :, None, None]  # (B, Cout, 1, 1)
                hidden_states = hidden_states + t
        hidden_states = self.norm2(hidden_states)
        hidden_states = self.nonlinearity(hidden_states)
        hidden_states = self.dropout(hidden_states)
        hidden_states = self.conv2(hidden_states)  # (B, Cout, H, W)
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor.contiguous())
        return (input_tensor + hidden_states) / self.output_scale_factor


class Downsample2D(nn.Module):
    """Strided 3x3 conv; padding=0 means diffusers' asymmetric (0,1,0,1) zero pad first."""

    def __init__(self, channels: int, out_channels: Optional[int] = None, padding: int = 1) -> None:
        super().__init__()
        out_channels = channels if out_channels is None else out_channels
        self.padding = padding
        self.conv = nn.Conv2d(channels, out_channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, hidden_states: Tensor) -> Tensor:
        if self.padding == 0:
            hidden_states = F.pad(hidden_states, [0, 1, 0, 1], mode="constant", value=0.0)
        return self.conv(hidden_states)  # (B, C, ceil(H/2), ceil(W/2))


class Upsample2D(nn.Module):
    """Nearest x2 (or to output_size) then 3x3 conv; bfloat16 interpolates in float32 (exact)."""

    def __init__(self, channels: int, out_channels: Optional[int] = None) -> None:
        super().__init__()
        out_channels = channels if out_channels is None else out_channels
        self.conv = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)

    def forward(self, hidden_states: Tensor, output_size: Optional[List[int]] = None) -> Tensor:
        dtype = hidden_states.dtype
        if dtype == torch.bfloat16:
            hidden_states = hidden_states.to(torch.float32)
        if hidden_states.shape[0] >= 64:
            hidden_states = hidden_states.contiguous()
        if output_size is None:
            hidden_states = F.interpolate(hidden_states, scale_factor=2.0, mode="nearest")  # (B, C, 2H, 2W)
        else:
            hidden_states = F.interpolate(hidden_states, size=output_size, mode="nearest")
        if dtype == torch.bfloat16:
            hidden_states = hidden_states.to(dtype)
        return self.conv(hidden_states)
