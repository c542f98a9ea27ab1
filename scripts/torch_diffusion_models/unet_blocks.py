"""UNet down/mid/up blocks (DownBlock2D, CrossAttnDownBlock2D, UNetMidBlock2DCrossAttn,
UpBlock2D, CrossAttnUpBlock2D) with diffusers' names.

All blocks of one kind share one TorchScript-friendly signature:
  down: forward(hidden (B,C,H,W), temb (B,E), encoder_hidden_states (B,T,D)) -> (hidden, [skip tensors])
  up:   forward(hidden, skips: List[Tensor] (popped from the end), temb, encoder_hidden_states,
              upsample_size: Optional[List[int]]) -> hidden
and each also has ``forward_attention_control(..., replacements, own_weight, recorded)``: ``forward`` with
its cross-attention layers controlled (see Attention.forward_attention_control); blocks without
cross-attention just run ``forward``.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .resnet import Downsample2D, ResnetBlock2D, Upsample2D
from .transformer_2d import Transformer2DModel


def _per_layer(value: Union[int, Sequence[int]], num_layers: int) -> List[int]:
    if isinstance(value, int):
        return [value] * num_layers
    return [int(v) for v in value]


class DownBlock2D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, num_layers: int = 1,
                 resnet_eps: float = 1e-6, resnet_act_fn: str = "swish", resnet_groups: int = 32,
                 add_downsample: bool = True, downsample_padding: int = 1, dropout: float = 0.0, **_unused) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb_channels, groups=resnet_groups,
                          eps=resnet_eps, non_linearity=resnet_act_fn, dropout=dropout)
            for i in range(num_layers)
        ])
        self.downsamplers = nn.ModuleList(
            [Downsample2D(out_channels, out_channels, padding=downsample_padding)] if add_downsample else [])

    def forward(self, hidden_states: Tensor, temb: Tensor, encoder_hidden_states: Tensor
                ) -> Tuple[Tensor, List[Tensor]]:
        output_states: List[Tensor] = []
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states, temb)  # (B, C, H, W)
            output_states.append(hidden_states)
        for downsampler in self.downsamplers:
            hidden_states = downsampler(hidden_states)  # (B, C, H/2, W/2)
            output_states.append(hidden_states)
        return hidden_states, output_states

    def forward_attention_control(self, hidden_states: Tensor, temb: Tensor, encoder_hidden_states: Tensor,
                                  replacements: List[Tensor], own_weight: Optional[Tensor], recorded: List[Tensor]
                                  ) -> Tuple[Tensor, List[Tensor]]:
        return self.forward(hidden_states, temb, encoder_hidden_states)


class CrossAttnDownBlock2D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, num_layers: int = 1,
                 transformer_layers_per_block: Union[int, Sequence[int]] = 1, resnet_eps: float = 1e-6,
                 resnet_act_fn: str = "swish", resnet_groups: int = 32, num_attention_heads: int = 1,
                 cross_attention_dim: int = 1280, add_downsample: bool = True, downsample_padding: int = 1,
                 use_linear_projection: bool = False, dropout: float = 0.0, **_unused) -> None:
        super().__init__()
        tl = _per_layer(transformer_layers_per_block, num_layers)
        self.resnets = nn.ModuleList([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb_channels, groups=resnet_groups,
                          eps=resnet_eps, non_linearity=resnet_act_fn, dropout=dropout)
            for i in range(num_layers)
        ])
        self.attentions = nn.ModuleList([
            Transformer2DModel(num_attention_heads, out_channels // num_attention_heads, out_channels,
                               num_layers=tl[i], cross_attention_dim=cross_attention_dim,
                               norm_num_groups=resnet_groups, use_linear_projection=use_linear_projection)
            for i in range(num_layers)
        ])
        self.downsamplers = nn.ModuleList(
            [Downsample2D(out_channels, out_channels, padding=downsample_padding)] if add_downsample else [])

    def forward(self, hidden_states: Tensor, temb: Tensor, encoder_hidden_states: Tensor
                ) -> Tuple[Tensor, List[Tensor]]:
        output_states: List[Tensor] = []
        for resnet, attn in zip(self.resnets, self.attentions):
            hidden_states = resnet(hidden_states, temb)  # (B, C, H, W)
            hidden_states = attn(hidden_states, encoder_hidden_states)  # (B, C, H, W)
            output_states.append(hidden_states)
        for downsampler in self.downsamplers:
            hidden_states = downsampler(hidden_states)  # (B, C, H/2, W/2)
            output_states.append(hidden_states)
        return hidden_states, output_states

    def forward_attention_control(self, hidden_states: Tensor, temb: Tensor, encoder_hidden_states: Tensor,
                                  replacements: List[Tensor], own_weight: Optional[Tensor], recorded: List[Tensor]
                                  ) -> Tuple[Tensor, List[Tensor]]:
        output_states: List[Tensor] = []
        for resnet, attn in zip(self.resnets, self.attentions):
            hidden_states = resnet(hidden_states, temb)  # (B, C, H, W)
            hidden_states = attn.forward_attention_control(hidden_states, encoder_hidden_states, replacements,
                                                           own_weight, recorded)  # (B, C, H, W)
            output_states.append(hidden_states)
        for downsampler in self.downsamplers:
            hidden_states = downsampler(hidden_states)  # (B, C, H/2, W/2)
            output_states.append(hidden_states)
        return hidden_states, output_states


class UNetMidBlock2DCrossAttn(nn.Module):
    def __init__(self, in_channels: int, temb_channels: int, num_layers: int = 1,
                 transformer_layers_per_block: Union[int, Sequence[int]] = 1, resnet_eps: float = 1e-6,
                 resnet_act_fn: str = "swish", resnet_groups: int = 32, num_attention_heads: int = 1,
                 output_scale_factor: float = 1.0, cross_attention_dim: int = 1280,
                 use_linear_projection: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        tl = _per_layer(transformer_layers_per_block, num_layers)
        resnet_groups = resnet_groups if resnet_groups is not None else min(in_channels // 4, 32)
        self.resnets = nn.ModuleList([
            ResnetBlock2D(in_channels, in_channels, temb_channels, groups=resnet_groups, eps=resnet_eps,
                          non_linearity=resnet_act_fn, output_scale_factor=output_scale_factor, dropout=dropout)
            for _ in range(num_layers + 1)
        ])
        self.attentions = nn.ModuleList([
            Transformer2DModel(num_attention_heads, in_channels // num_attention_heads, in_channels,
                               num_layers=tl[i], cross_attention_dim=cross_attention_dim,
                               norm_num_groups=resnet_groups, use_linear_projection=use_linear_projection)
            for i in range(num_layers)
        ])

    def forward(self, hidden_states: Tensor, temb: Tensor, encoder_hidden_states: Tensor) -> Tensor:
        # resnets[0], then (attentions[i], resnets[i + 1]) pairs; TorchScript cannot zip a sliced ModuleList
        for i, resnet in enumerate(self.resnets):
            if i > 0:
                for j, attn in enumerate(self.attentions):
                    if j == i - 1:
                        hidden_states = attn(hidden_states, encoder_hidden_states)  # (B, C, H, W)
            hidden_states = resnet(hidden_states, temb)  # (B, C, H, W)
        return hidden_states  # (B, C, H, W)

    def forward_attention_control(self, hidden_states: Tensor, temb: Tensor, encoder_hidden_states: Tensor,
                                  replacements: List[Tensor], own_weight: Optional[Tensor], recorded: List[Tensor]
                                  ) -> Tensor:
        for i, resnet in enumerate(self.resnets):
            if i > 0:
                for j, attn in enumerate(self.attentions):
                    if j == i - 1:
                        hidden_states = attn.forward_attention_control(hidden_states, encoder_hidden_states,
                                                                       replacements, own_weight, recorded)
            hidden_states = resnet(hidden_states, temb)  # (B, C, H, W)
        return hidden_states  # (B, C, H, W)


class UpBlock2D(nn.Module):
    def __init__(self, in_channels: int, prev_output_channel: int, out_channels: int, temb_channels: int,
                 num_layers: int = 1, resnet_eps: float = 1e-6, resnet_act_fn: str = "swish",
                 resnet_groups: int = 32, add_upsample: bool = True, dropout: float = 0.0, **_unused) -> None:
        super().__init__()
        resnets = []
        for i in range(num_layers):
            res_skip_channels = in_channels if (i == num_layers - 1) else out_channels
            resnet_in_channels = prev_output_channel if i == 0 else out_channels
            resnets.append(ResnetBlock2D(resnet_in_channels + res_skip_channels, out_channels, temb_channels,
                                         groups=resnet_groups, eps=resnet_eps, non_linearity=resnet_act_fn,
                                         dropout=dropout))
        self.resnets = nn.ModuleList(resnets)
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels, out_channels)] if add_upsample else [])
        self.num_resnets = num_layers

    def forward(self, hidden_states: Tensor, res_hidden_states: List[Tensor], temb: Tensor,
                encoder_hidden_states: Tensor, upsample_size: Optional[List[int]]) -> Tensor:
        for resnet in self.resnets:
            res = res_hidden_states.pop()
            hidden_states = torch.cat([hidden_states, res], dim=1)  # (B, C + Cskip, H, W)
            hidden_states = resnet(hidden_states, temb)  # (B, C, H, W)
        for upsampler in self.upsamplers:
            hidden_states = upsampler(hidden_states, upsample_size)  # (B, C, 2H, 2W)
        return hidden_states

    def forward_attention_control(self, hidden_states: Tensor, res_hidden_states: List[Tensor], temb: Tensor,
                                  encoder_hidden_states: Tensor, upsample_size: Optional[List[int]],
                                  replacements: List[Tensor], own_weight: Optional[Tensor], recorded: List[Tensor]
                                  ) -> Tensor:
        return self.forward(hidden_states, res_hidden_states, temb, encoder_hidden_states, upsample_size)


class CrossAttnUpBlock2D(nn.Module):
    def __init__(self, in_channels: int, prev_output_channel: int, out_channels: int, temb_channels: int,
                 num_layers: int = 1, transformer_layers_per_block: Union[int, Sequence[int]] = 1,
                 resnet_eps: float = 1e-6, resnet_act_fn: str = "swish", resnet_groups: int = 32,
                 num_attention_heads: int = 1, cross_attention_dim: int = 1280, add_upsample: bool = True,
                 use_linear_projection: bool = False, dropout: float = 0.0, **_unused) -> None:
        super().__init__()
        tl = _per_layer(transformer_layers_per_block, num_layers)
        resnets = []
        attentions = []
        for i in range(num_layers):
            res_skip_channels = in_channels if (i == num_layers - 1) else out_channels
            resnet_in_channels = prev_output_channel if i == 0 else out_channels
            resnets.append(ResnetBlock2D(resnet_in_channels + res_skip_channels, out_channels, temb_channels,
                                         groups=resnet_groups, eps=resnet_eps, non_linearity=resnet_act_fn,
                                         dropout=dropout))
            attentions.append(Transformer2DModel(num_attention_heads, out_channels // num_attention_heads,
                                                 out_channels, num_layers=tl[i],
                                                 cross_attention_dim=cross_attention_dim,
                                                 norm_num_groups=resnet_groups,
                                                 use_linear_projection=use_linear_projection))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions)
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels, out_channels)] if add_upsample else [])
        self.num_resnets = num_layers

    def forward(self, hidden_states: Tensor, res_hidden_states: List[Tensor], temb: Tensor,
                encoder_hidden_states: Tensor, upsample_size: Optional[List[int]]) -> Tensor:
        for resnet, attn in zip(self.resnets, self.attentions):
            res = res_hidden_states.pop()
            hidden_states = torch.cat([hidden_states, res], dim=1)  # (B, C + Cskip, H, W)
            hidden_states = resnet(hidden_states, temb)  # (B, C, H, W)
            hidden_states = attn(hidden_states, encoder_hidden_states)  # (B, C, H, W)
        for upsampler in self.upsamplers:
            hidden_states = upsampler(hidden_states, upsample_size)  # (B, C, 2H, 2W)
        return hidden_states

    def forward_attention_control(self, hidden_states: Tensor, res_hidden_states: List[Tensor], temb: Tensor,
                                  encoder_hidden_states: Tensor, upsample_size: Optional[List[int]],
                                  replacements: List[Tensor], own_weight: Optional[Tensor], recorded: List[Tensor]
                                  ) -> Tensor:
        for resnet, attn in zip(self.resnets, self.attentions):
            res = res_hidden_states.pop()
            hidden_states = torch.cat([hidden_states, res], dim=1)  # (B, C + Cskip, H, W)
            hidden_states = resnet(hidden_states, temb)  # (B, C, H, W)
            hidden_states = attn.forward_attention_control(hidden_states, encoder_hidden_states, replacements,
                                                           own_weight, recorded)  # (B, C, H, W)
        for upsampler in self.upsamplers:
            hidden_states = upsampler(hidden_states, upsample_size)  # (B, C, 2H, 2W)
        return hidden_states


DOWN_BLOCKS = {"DownBlock2D": DownBlock2D, "CrossAttnDownBlock2D": CrossAttnDownBlock2D}
UP_BLOCKS = {"UpBlock2D": UpBlock2D, "CrossAttnUpBlock2D": CrossAttnUpBlock2D}
