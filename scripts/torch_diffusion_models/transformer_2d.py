"""diffusers-style Attention, FeedForward, BasicTransformerBlock and the continuous-input
Transformer2DModel used inside the UNet's cross-attention blocks."""
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import AttentionKernel, attend_probs, attention_probs


class Attention(nn.Module):
    """diffusers.models.attention_processor.Attention with AttnProcessor2_0 semantics.

    Parameters: to_q, to_k, to_v, to_out.0 (+ optional group_norm for the VAE).
    Accepts (B, T, C) tokens, or (B, C, H, W) feature maps (flattened to tokens).
    """

    def __init__(self, query_dim: int, cross_attention_dim: Optional[int] = None, heads: int = 8,
                 dim_head: int = 64, dropout: float = 0.0, bias: bool = False, out_bias: bool = True,
                 norm_num_groups: Optional[int] = None, eps: float = 1e-5, residual_connection: bool = False,
                 rescale_output_factor: float = 1.0) -> None:
        super().__init__()
        inner_dim = dim_head * heads
        context_dim = cross_attention_dim if cross_attention_dim is not None else query_dim
        self.heads = heads
        self.scale = float(dim_head) ** -0.5
        self.residual_connection = residual_connection
        self.rescale_output_factor = float(rescale_output_factor)
        if norm_num_groups is not None:
            self.group_norm = nn.GroupNorm(num_channels=query_dim, num_groups=norm_num_groups, eps=eps, affine=True)
        else:
            self.group_norm = None
        self.to_q = nn.Linear(query_dim, inner_dim, bias=bias)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=bias)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim, bias=out_bias), nn.Dropout(dropout)])
        self.kernel = AttentionKernel()

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Optional[Tensor] = None) -> Tensor:
        residual = hidden_states
        input_ndim = hidden_states.dim()
        b = 0
        c = 0
        h = 0
        w = 0
        if input_ndim == 4:
            b = hidden_states.shape[0]
            c = hidden_states.shape[1]
            h = hidden_states.shape[2]
            w = hidden_states.shape[3]
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        if self.group_norm is not None:
            hidden_states = self.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = self.to_q(hidden_states)  # (B, Tq, inner)
        key = self.to_k(context)  # (B, Tk, inner)
        value = self.to_v(context)  # (B, Tk, inner)
        batch = query.shape[0]
        head_dim = key.shape[-1] // self.heads
        query = query.view(batch, -1, self.heads, head_dim).transpose(1, 2)  # (B, H, Tq, D)
        key = key.view(batch, -1, self.heads, head_dim).transpose(1, 2)  # (B, H, Tk, D)
        value = value.view(batch, -1, self.heads, head_dim).transpose(1, 2)  # (B, H, Tk, D)
        out = self.kernel(query, key, value, self.scale, None)  # (B, H, Tq, D)
        out = out.transpose(1, 2).reshape(batch, -1, self.heads * head_dim)  # (B, Tq, inner)
        out = out.to(query.dtype)
        out = self.to_out[0](out)  # (B, Tq, query_dim)
        out = self.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)  # (B, C, H, W)
        if self.residual_connection:
            out = out + residual
        out = out / self.rescale_output_factor
        return out


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, bias: bool = True) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2, bias=bias)

    def forward(self, hidden_states: Tensor) -> Tensor:
        hidden_states, gate = self.proj(hidden_states).chunk(2, dim=-1)  # (B, T, inner) x2
        return hidden_states * F.gelu(gate)


class GELU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, approximate: str = "none", bias: bool = True) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out, bias=bias)
        self.approximate = approximate

    def forward(self, hidden_states: Tensor) -> Tensor:
        return F.gelu(self.proj(hidden_states), approximate=self.approximate)


class FeedForward(nn.Module):
    """net.0 = activation projection (GEGLU / GELU), net.1 = dropout, net.2 = Linear."""

    def __init__(self, dim: int, dim_out: Optional[int] = None, mult: int = 4, dropout: float = 0.0,
                 activation_fn: str = "geglu", bias: bool = True) -> None:
        super().__init__()
        inner_dim = int(dim * mult)
        dim_out = dim if dim_out is None else dim_out
        if activation_fn == "geglu":
            act: nn.Module = GEGLU(dim, inner_dim, bias=bias)
        elif activation_fn == "gelu":
            act = GELU(dim, inner_dim, bias=bias)
        elif activation_fn == "gelu-approximate":
            act = GELU(dim, inner_dim, approximate="tanh", bias=bias)
        else:
            raise ValueError(f"unsupported activation_fn {activation_fn!r}")
        self.net = nn.ModuleList([act, nn.Dropout(dropout), nn.Linear(inner_dim, dim_out, bias=bias)])

    def forward(self, hidden_states: Tensor) -> Tensor:
        for module in self.net:
            hidden_states = module(hidden_states)
        return hidden_states


class BasicTransformerBlock(nn.Module):
    """norm_type="layer_norm": self-attn (attn1), cross-attn (attn2), feed-forward (ff)."""

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int,
                 cross_attention_dim: Optional[int] = None, activation_fn: str = "geglu",
                 attention_bias: bool = False, norm_elementwise_affine: bool = True, norm_eps: float = 1e-5,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=norm_elementwise_affine, eps=norm_eps)
        self.attn1 = Attention(dim, None, num_attention_heads, attention_head_dim, dropout, attention_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=norm_elementwise_affine)
        self.attn2 = Attention(dim, cross_attention_dim, num_attention_heads, attention_head_dim, dropout,
                               attention_bias)
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=norm_elementwise_affine)
        self.ff = FeedForward(dim, dropout=dropout, activation_fn=activation_fn)

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Optional[Tensor]) -> Tensor:
        norm_hidden_states = self.norm1(hidden_states)  # (B, T, C)
        hidden_states = self.attn1(norm_hidden_states, None) + hidden_states
        norm_hidden_states = self.norm2(hidden_states)
        hidden_states = self.attn2(norm_hidden_states, encoder_hidden_states) + hidden_states
        norm_hidden_states = self.norm3(hidden_states)
        hidden_states = self.ff(norm_hidden_states) + hidden_states
        return hidden_states  # (B, T, C)

    def forward_attention_control(self, hidden_states: Tensor, encoder_hidden_states: Tensor, replacements: List[Tensor],
                                  own_weight: Optional[Tensor], recorded: List[Tensor]) -> Tensor:
        """``forward`` with the cross-attention (attn2) controlled, for prompt-to-prompt (see
        UNet2DConditionModel.forward_attention_control); self-attention (attn1) as in ``forward``."""
        norm_hidden_states = self.norm1(hidden_states)  # (B, T, C)
        hidden_states = self.attn1(norm_hidden_states, None) + hidden_states
        norm_hidden_states = self.norm2(hidden_states)
        hidden_states = self.controlled_cross_attention(norm_hidden_states, encoder_hidden_states, replacements,
                                                        own_weight, recorded) + hidden_states
        norm_hidden_states = self.norm3(hidden_states)
        hidden_states = self.ff(norm_hidden_states) + hidden_states
        return hidden_states  # (B, T, C)

    def controlled_cross_attention(self, hidden_states: Tensor, encoder_hidden_states: Tensor,
                                   replacements: List[Tensor], own_weight: Optional[Tensor],
                                   recorded: List[Tensor]) -> Tensor:
        """attn2's ``forward`` on (B, T, C) tokens, with its probabilities (B, heads, T, T_text) appended to
        ``recorded``; given ``replacements``, it attends with ``replacements[i]`` (i: this layer's place in
        ``recorded``) plus ``own_weight`` (broadcast) times its own probabilities when given. The math path
        of Attention.forward, step for step (``attend_probs(attention_probs(q, k, s), v)``)."""
        attn = self.attn2
        query = attn.to_q(hidden_states)  # (B, Tq, inner)
        key = attn.to_k(encoder_hidden_states)  # (B, Tk, inner)
        value = attn.to_v(encoder_hidden_states)  # (B, Tk, inner)
        batch = query.shape[0]
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, H, Tq, D)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, H, Tk, D)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, H, Tk, D)
        probs = attention_probs(query, key, attn.scale)  # (B, H, Tq, Tk) float32
        layer = len(recorded)
        recorded.append(probs)
        if len(replacements) > 0:
            replacement = replacements[layer]
            if replacement.shape != probs.shape:
                raise RuntimeError("forward_attention_control: replacement {} has shape {} but the layer's attention "
                                   "probabilities have {}".format(layer, replacement.shape, probs.shape))
            replacement = replacement.to(probs.dtype)
            probs = replacement if own_weight is None else probs * own_weight.to(probs.dtype) + replacement
        out = attend_probs(probs, value)  # (B, H, Tq, D)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)  # (B, Tq, inner)
        out = out.to(query.dtype)
        out = attn.to_out[0](out)  # (B, Tq, query_dim)
        out = attn.to_out[1](out)
        return out / attn.rescale_output_factor


class Transformer2DModel(nn.Module):
    """Continuous-input Transformer2DModel (GroupNorm eps 1e-6, proj_in/proj_out conv1x1 or linear)."""

    def __init__(self, num_attention_heads: int, attention_head_dim: int, in_channels: int, num_layers: int = 1,
                 cross_attention_dim: Optional[int] = None, norm_num_groups: int = 32,
                 use_linear_projection: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim
        self.use_linear_projection = use_linear_projection
        self.norm = nn.GroupNorm(num_groups=norm_num_groups, num_channels=in_channels, eps=1e-6, affine=True)
        if use_linear_projection:
            self.proj_in: nn.Module = nn.Linear(in_channels, inner_dim)
        else:
            self.proj_in = nn.Conv2d(in_channels, inner_dim, kernel_size=1, stride=1, padding=0)
        self.transformer_blocks = nn.ModuleList([
            BasicTransformerBlock(inner_dim, num_attention_heads, attention_head_dim,
                                  cross_attention_dim=cross_attention_dim, dropout=dropout)
            for _ in range(num_layers)
        ])
        if use_linear_projection:
            self.proj_out: nn.Module = nn.Linear(inner_dim, in_channels)
        else:
            self.proj_out = nn.Conv2d(inner_dim, in_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Optional[Tensor]) -> Tensor:
        batch = hidden_states.shape[0]
        height = hidden_states.shape[2]
        width = hidden_states.shape[3]
        residual = hidden_states
        hidden_states = self.norm(hidden_states)  # (B, C, H, W)
        if not self.use_linear_projection:
            hidden_states = self.proj_in(hidden_states)  # (B, inner, H, W)
            inner_dim = hidden_states.shape[1]
            hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch, height * width, inner_dim)
        else:
            inner_dim = hidden_states.shape[1]
            hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch, height * width, inner_dim)
            hidden_states = self.proj_in(hidden_states)  # (B, HW, inner)
        for block in self.transformer_blocks:
            hidden_states = block(hidden_states, encoder_hidden_states)  # (B, HW, inner)
        if not self.use_linear_projection:
            inner_dim = hidden_states.shape[-1]
            hidden_states = hidden_states.reshape(batch, height, width, inner_dim).permute(0, 3, 1, 2).contiguous()
            hidden_states = self.proj_out(hidden_states)  # (B, C, H, W)
        else:
            hidden_states = self.proj_out(hidden_states)  # (B, HW, C)
            hidden_states = hidden_states.reshape(batch, height, width, -1).permute(0, 3, 1, 2).contiguous()
        return hidden_states + residual

    def forward_attention_control(self, hidden_states: Tensor, encoder_hidden_states: Tensor, replacements: List[Tensor],
                                  own_weight: Optional[Tensor], recorded: List[Tensor]) -> Tensor:
        """``forward`` with every block's cross-attention controlled, in block order."""
        batch = hidden_states.shape[0]
        height = hidden_states.shape[2]
        width = hidden_states.shape[3]
        residual = hidden_states
        hidden_states = self.norm(hidden_states)  # (B, C, H, W)
        if not self.use_linear_projection:
            hidden_states = self.proj_in(hidden_states)  # (B, inner, H, W)
            inner_dim = hidden_states.shape[1]
            hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch, height * width, inner_dim)
        else:
            inner_dim = hidden_states.shape[1]
            hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch, height * width, inner_dim)
            hidden_states = self.proj_in(hidden_states)  # (B, HW, inner)
        for block in self.transformer_blocks:
            hidden_states = block.forward_attention_control(hidden_states, encoder_hidden_states, replacements,
                                                            own_weight, recorded)  # (B, HW, inner)
        if not self.use_linear_projection:
            inner_dim = hidden_states.shape[-1]
            hidden_states = hidden_states.reshape(batch, height, width, inner_dim).permute(0, 3, 1, 2).contiguous()
            hidden_states = self.proj_out(hidden_states)  # (B, C, H, W)
        else:
            hidden_states = self.proj_out(hidden_states)  # (B, HW, C)
            hidden_states = hidden_states.reshape(batch, height, width, -1).permute(0, 3, 1, 2).contiguous()
        return hidden_states + residual
