"""AutoencoderKL (Stable Diffusion VAE) with diffusers' config keys and state-dict names.

Exported (TorchScript) methods:
  encode(x (B, Cin, H, W)) -> moments (B, 2*latent_channels, H/f, W/f)
      moments = quant_conv(encoder(x)); mean, logvar = moments.chunk(2, dim=1);
      diffusers then clamps logvar to [-30, 20], std = exp(0.5 * logvar).
  decode(z (B, latent_channels, h, w)) -> image (B, out_channels, h*f, w*f)
  forward(x) -> decode(mean of encode(x))
No scaling_factor / shift_factor is applied inside (the pipeline does that, as in diffusers).
Inputs are cast to the parameter dtype; outputs are in the parameter dtype.
"""
import re
from typing import Any, Dict

import torch
from torch import Tensor, nn

from .resnet import Downsample2D, ResnetBlock2D, Upsample2D
from .transformer_2d import Attention

DEFAULT_CONFIG: Dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D"], "block_out_channels": [64], "layers_per_block": 1,
    "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 32, "sample_size": 32, "scaling_factor": 0.18215,
    "shift_factor": None, "latents_mean": None, "latents_std": None, "force_upcast": True,
    "use_quant_conv": True, "use_post_quant_conv": True, "mid_block_add_attention": True,
}


class UNetMidBlock2D(nn.Module):
    """resnets.0, (attentions.i, resnets.i+1); no time embedding (VAE)."""

    def __init__(self, in_channels: int, resnet_eps: float, resnet_act_fn: str, resnet_groups: int,
                 add_attention: bool = True, num_layers: int = 1) -> None:
        super().__init__()
        self.add_attention = add_attention
        self.resnets = nn.ModuleList([
            ResnetBlock2D(in_channels, in_channels, None, groups=resnet_groups, eps=resnet_eps,
                          non_linearity=resnet_act_fn) for _ in range(num_layers + 1)])
        attention_head_dim = in_channels
        self.attentions = nn.ModuleList([
            Attention(in_channels, heads=in_channels // attention_head_dim, dim_head=attention_head_dim, bias=True,
                      norm_num_groups=resnet_groups, eps=resnet_eps, residual_connection=True)
            for _ in range(num_layers)] if add_attention else [])

    def forward(self, hidden_states: Tensor) -> Tensor:
        for i, resnet in enumerate(self.resnets):
            if i > 0:
                for j, attn in enumerate(self.attentions):
                    if j == i - 1:
                        hidden_states = attn(hidden_states, None)  # (B, C, H, W)
            hidden_states = resnet(hidden_states, None)  # (B, C, H, W)
        return hidden_states


class DownEncoderBlock2D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_layers: int, resnet_eps: float,
                 resnet_act_fn: str, resnet_groups: int, add_downsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, None, groups=resnet_groups,
                          eps=resnet_eps, non_linearity=resnet_act_fn) for i in range(num_layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels, out_channels, padding=0)]
                                          if add_downsample else [])

    def forward(self, hidden_states: Tensor) -> Tensor:
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states, None)
        for downsampler in self.downsamplers:
            hidden_states = downsampler(hidden_states)  # (B, C, H/2, W/2)
        return hidden_states


class UpDecoderBlock2D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_layers: int, resnet_eps: float,
                 resnet_act_fn: str, resnet_groups: int, add_upsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, None, groups=resnet_groups,
                          eps=resnet_eps, non_linearity=resnet_act_fn) for i in range(num_layers)])
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels, out_channels)] if add_upsample else [])

    def forward(self, hidden_states: Tensor) -> Tensor:
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states, None)
        for upsampler in self.upsamplers:
            hidden_states = upsampler(hidden_states, None)  # (B, C, 2H, 2W)
        return hidden_states


class Encoder(nn.Module):
    def __init__(self, cfg: Dict[str, Any]) -> None:
        super().__init__()
        boc = list(cfg["block_out_channels"])
        groups, act = int(cfg["norm_num_groups"]), cfg["act_fn"]
        self.conv_in = nn.Conv2d(cfg["in_channels"], boc[0], kernel_size=3, stride=1, padding=1)
        self.down_blocks = nn.ModuleList()
        output_channel = boc[0]
        for i, block_type in enumerate(cfg["down_block_types"]):
            if block_type != "DownEncoderBlock2D":
                raise NotImplementedError(f"AutoencoderKL down block {block_type!r} is not supported")
            input_channel, output_channel = output_channel, boc[i]
            self.down_blocks.append(DownEncoderBlock2D(input_channel, output_channel, cfg["layers_per_block"], 1e-6,
                                                       act, groups, add_downsample=i != len(boc) - 1))
        self.mid_block = UNetMidBlock2D(boc[-1], 1e-6, act, groups, bool(cfg["mid_block_add_attention"]))
        self.conv_norm_out = nn.GroupNorm(num_channels=boc[-1], num_groups=groups, eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(boc[-1], 2 * cfg["latent_channels"], 3, padding=1)

    def forward(self, sample: Tensor) -> Tensor:
        sample = self.conv_in(sample)  # (B, C0, H, W)
        for down_block in self.down_blocks:
            sample = down_block(sample)
        sample = self.mid_block(sample)  # (B, Clast, h, w)
        sample = self.conv_norm_out(sample)
        sample = self.conv_act(sample)
        return self.conv_out(sample)  # (B, 2*latent, h, w)


class Decoder(nn.Module):
    def __init__(self, cfg: Dict[str, Any]) -> None:
        super().__init__()
        boc = list(cfg["block_out_channels"])
        groups, act = int(cfg["norm_num_groups"]), cfg["act_fn"]
        self.conv_in = nn.Conv2d(cfg["latent_channels"], boc[-1], kernel_size=3, stride=1, padding=1)
        self.mid_block = UNetMidBlock2D(boc[-1], 1e-6, act, groups, bool(cfg["mid_block_add_attention"]))
        self.up_blocks = nn.ModuleList()
        rboc = boc[::-1]
        output_channel = rboc[0]
        for i, block_type in enumerate(cfg["up_block_types"]):
            if block_type != "UpDecoderBlock2D":
                raise NotImplementedError(f"AutoencoderKL up block {block_type!r} is not supported")
            prev_output_channel, output_channel = output_channel, rboc[i]
            self.up_blocks.append(UpDecoderBlock2D(prev_output_channel, output_channel, cfg["layers_per_block"] + 1,
                                                   1e-6, act, groups, add_upsample=i != len(boc) - 1))
        self.conv_norm_out = nn.GroupNorm(num_channels=boc[0], num_groups=groups, eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(boc[0], cfg["out_channels"], 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        sample = self.conv_in(z)  # (B, Clast, h, w)
        sample = self.mid_block(sample)
        for up_block in self.up_blocks:
            sample = up_block(sample)  # upsampled
        sample = self.conv_norm_out(sample)
        sample = self.conv_act(sample)
        return self.conv_out(sample)  # (B, Cout, H, W)


class AutoencoderKL(nn.Module):
    __jit_ignored_attributes__ = ["config"]

    def __init__(self, config: Dict[str, Any]) -> None:
        super().__init__()
        cfg = dict(DEFAULT_CONFIG)
        cfg.update({k: v for k, v in config.items() if not k.startswith("_")})
        if len(cfg["down_block_types"]) != len(cfg["block_out_channels"]):
            raise ValueError("down_block_types and block_out_channels must have the same length")
        self.config = cfg
        latent = int(cfg["latent_channels"])
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * latent, 2 * latent, 1) if cfg["use_quant_conv"] else None
        self.post_quant_conv = nn.Conv2d(latent, latent, 1) if cfg["use_post_quant_conv"] else None

    @torch.jit.export
    def encode(self, x: Tensor) -> Tensor:
        x = x.to(self.encoder.conv_in.weight.dtype)  # (B, Cin, H, W)
        h = self.encoder(x)  # (B, 2*latent, h, w)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        return h

    @torch.jit.export
    def decode(self, z: Tensor) -> Tensor:
        z = z.to(self.decoder.conv_in.weight.dtype)  # (B, latent, h, w)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)  # (B, Cout, H, W)

    def forward(self, x: Tensor) -> Tensor:
        moments = self.encode(x)
        mean = moments.chunk(2, dim=1)[0]  # (B, latent, h, w)
        return self.decode(mean)


_LEGACY_ATTN = re.compile(r"^(.*mid_block\.attentions\.\d+\.)(query|key|value|proj_attn)\.(weight|bias)$")
_LEGACY_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def convert_legacy_vae_state_dict(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Rename the deprecated VAE attention names (query/key/value/proj_attn) to to_q/to_k/to_v/to_out.0
    and squeeze 1x1-conv shaped attention weights to linear weights."""
    out: Dict[str, Tensor] = {}
    for key, value in state_dict.items():
        m = _LEGACY_ATTN.match(key)
        if m:
            key = f"{m.group(1)}{_LEGACY_NAMES[m.group(2)]}.{m.group(3)}"
        if ".attentions." in key and key.endswith(".weight") and value.dim() == 4 and \
                value.shape[2] == 1 and value.shape[3] == 1 and "group_norm" not in key:
            value = value[:, :, 0, 0]
        out[key] = value
    return out
