"""UNet2DConditionModel (SD 1.x / 2.x / SDXL / inpainting / InstructPix2Pix) with diffusers'
config keys and state-dict names.

forward(sample (B, Cin, H, W), timestep (0-d or 1-d, int or float), encoder_hidden_states (B, T, D),
        text_embeds: Optional (B, P) = None, time_ids: Optional (B, 6) = None) -> (B, Cout, H, W)

Inputs are cast to the parameter dtype; the output is in the parameter dtype.
text_embeds/time_ids are required when addition_embed_type == "text_time" (SDXL) and ignored otherwise.

forward_attention_control(sample, timestep, encoder_hidden_states, replacements: List[Tensor],
        own_weight: Optional = None, text_embeds = None, time_ids = None) -> (prediction, probabilities)
    prompt-to-prompt's hook (Hertz et al., 2022): the prediction ``forward`` makes, plus the attention
    probabilities of every cross-attention layer (down blocks, mid block, up blocks, in order), each
    (B, heads, H_l*W_l, T) float32. With ``replacements`` (one tensor per layer, of those shapes) each
    cross-attention layer attends with ``replacement + own_weight * own probabilities`` (own_weight
    broadcast, e.g. (B, 1, 1, T); None means 0: the replacement alone) instead of its own softmax.
    With no replacements it computes exactly what ``forward`` computes (non-fused exports: bit for bit;
    its attention is always the math path, so a fused export's differs by rounding). Self-attention is
    never controlled.
"""
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .embeddings import TimestepEmbedding, Timesteps, get_activation
from .transformer_2d import BasicTransformerBlock
from .unet_blocks import DOWN_BLOCKS, UP_BLOCKS, UNetMidBlock2DCrossAttn

DEFAULT_CONFIG: Dict[str, Any] = {
    "sample_size": None, "in_channels": 4, "out_channels": 4, "center_input_sample": False,
    "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "only_cross_attention": False, "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
    "downsample_padding": 1, "mid_block_scale_factor": 1, "dropout": 0.0, "act_fn": "silu",
    "norm_num_groups": 32, "norm_eps": 1e-5, "cross_attention_dim": 1280, "transformer_layers_per_block": 1,
    "reverse_transformer_layers_per_block": None, "attention_head_dim": 8, "num_attention_heads": None,
    "dual_cross_attention": False, "use_linear_projection": False, "class_embed_type": None,
    "addition_embed_type": None, "addition_time_embed_dim": None, "num_class_embeds": None,
    "upcast_attention": False, "resnet_time_scale_shift": "default", "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0, "time_embedding_type": "positional", "time_embedding_dim": None,
    "time_embedding_act_fn": None, "timestep_post_act": None, "time_cond_proj_dim": None, "conv_in_kernel": 3,
    "conv_out_kernel": 3, "projection_class_embeddings_input_dim": None, "attention_type": "default",
    "class_embeddings_concat": False, "encoder_hid_dim": None, "encoder_hid_dim_type": None,
    "cross_attention_norm": None,
}

# config values this implementation supports only at their default
_MUST_BE_DEFAULT = ("class_embed_type", "num_class_embeds", "encoder_hid_dim_type", "time_cond_proj_dim",
                    "time_embedding_act_fn", "timestep_post_act", "class_embeddings_concat", "cross_attention_norm",
                    "resnet_skip_time_act", "dual_cross_attention")


def _as_list(value: Any, n: int) -> List[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"expected {n} values, got {list(value)}")
        return list(value)
    return [value] * n


def resolve_unet_config(config: Dict[str, Any]) -> Dict[str, Any]:
    cfg = dict(DEFAULT_CONFIG)
    cfg.update({k: v for k, v in config.items() if not k.startswith("_")})
    for key in _MUST_BE_DEFAULT:
        if cfg[key] != DEFAULT_CONFIG[key]:
            raise NotImplementedError(f"UNet2DConditionModel: {key}={cfg[key]!r} is not supported")
    oca = cfg["only_cross_attention"]
    if oca is True or (isinstance(oca, (list, tuple)) and any(oca)):
        raise NotImplementedError("UNet2DConditionModel: only_cross_attention=True is not supported")
    if cfg["time_embedding_type"] != "positional":
        raise NotImplementedError(f"time_embedding_type={cfg['time_embedding_type']!r} is not supported")
    if cfg["resnet_time_scale_shift"] != "default":
        raise NotImplementedError("resnet_time_scale_shift other than 'default' is not supported")
    if float(cfg["resnet_out_scale_factor"]) != 1.0:
        raise NotImplementedError("resnet_out_scale_factor != 1 is not supported")
    if cfg["attention_type"] != "default":
        raise NotImplementedError(f"attention_type={cfg['attention_type']!r} is not supported")
    if cfg["addition_embed_type"] not in (None, "text_time"):
        raise NotImplementedError(f"addition_embed_type={cfg['addition_embed_type']!r} is not supported")
    if cfg["mid_block_type"] != "UNetMidBlock2DCrossAttn":
        raise NotImplementedError(f"mid_block_type={cfg['mid_block_type']!r} is not supported")
    if cfg["norm_num_groups"] is None:
        raise NotImplementedError("norm_num_groups=None is not supported")
    for t in list(cfg["down_block_types"]) + list(cfg["up_block_types"]):
        if t not in DOWN_BLOCKS and t not in UP_BLOCKS:
            raise NotImplementedError(f"block type {t!r} is not supported")
    if len(cfg["down_block_types"]) != len(cfg["up_block_types"]):
        raise ValueError("down_block_types and up_block_types must have the same length")
    return cfg


class UNet2DConditionModel(nn.Module):
    __jit_ignored_attributes__ = ["config"]

    def __init__(self, config: Dict[str, Any]) -> None:
        super().__init__()
        cfg = resolve_unet_config(config)
        self.config = cfg
        n = len(cfg["down_block_types"])
        boc = list(cfg["block_out_channels"])
        # diffusers quirk: attention_head_dim is the head *count* unless num_attention_heads is given
        heads = _as_list(cfg["num_attention_heads"] or cfg["attention_head_dim"], n)
        cross_dim = _as_list(cfg["cross_attention_dim"], n)
        layers = _as_list(cfg["layers_per_block"], n)
        tlayers = _as_list(cfg["transformer_layers_per_block"], n)
        rev_tlayers = (list(reversed(tlayers)) if cfg["reverse_transformer_layers_per_block"] is None
                       else list(cfg["reverse_transformer_layers_per_block"]))
        act, eps, groups = cfg["act_fn"], float(cfg["norm_eps"]), int(cfg["norm_num_groups"])
        self.center_input_sample = bool(cfg["center_input_sample"])

        pad_in = (cfg["conv_in_kernel"] - 1) // 2
        self.conv_in = nn.Conv2d(cfg["in_channels"], boc[0], kernel_size=cfg["conv_in_kernel"], padding=pad_in)
        time_embed_dim = cfg["time_embedding_dim"] or boc[0] * 4
        self.time_proj = Timesteps(boc[0], bool(cfg["flip_sin_to_cos"]), float(cfg["freq_shift"]))
        self.time_embedding = TimestepEmbedding(boc[0], time_embed_dim, act_fn=act)

        self.has_text_time = cfg["addition_embed_type"] == "text_time"
        if self.has_text_time:
            if cfg["addition_time_embed_dim"] is None or cfg["projection_class_embeddings_input_dim"] is None:
                raise ValueError("text_time needs addition_time_embed_dim and projection_class_embeddings_input_dim")
            self.add_time_proj = Timesteps(cfg["addition_time_embed_dim"], bool(cfg["flip_sin_to_cos"]),
                                           float(cfg["freq_shift"]))
            self.add_embedding = TimestepEmbedding(cfg["projection_class_embeddings_input_dim"], time_embed_dim,
                                                   act_fn=act)
        else:
            self.add_time_proj = None
            self.add_embedding = None

        common = dict(temb_channels=time_embed_dim, resnet_eps=eps, resnet_act_fn=act, resnet_groups=groups,
                      use_linear_projection=bool(cfg["use_linear_projection"]), dropout=float(cfg["dropout"]))
        self.down_blocks = nn.ModuleList()
        output_channel = boc[0]
        for i, block_type in enumerate(cfg["down_block_types"]):
            input_channel, output_channel = output_channel, boc[i]
            self.down_blocks.append(DOWN_BLOCKS[block_type](
                in_channels=input_channel, out_channels=output_channel, num_layers=layers[i],
                transformer_layers_per_block=tlayers[i], num_attention_heads=heads[i],
                cross_attention_dim=cross_dim[i], add_downsample=i != len(boc) - 1,
                downsample_padding=cfg["downsample_padding"], **common))

        self.mid_block = UNetMidBlock2DCrossAttn(
            boc[-1], time_embed_dim, transformer_layers_per_block=tlayers[-1], resnet_eps=eps, resnet_act_fn=act,
            resnet_groups=groups, num_attention_heads=heads[-1], output_scale_factor=cfg["mid_block_scale_factor"],
            cross_attention_dim=cross_dim[-1], use_linear_projection=bool(cfg["use_linear_projection"]),
            dropout=float(cfg["dropout"]))

        self.up_blocks = nn.ModuleList()
        rboc, rheads, rlayers, rcross = boc[::-1], heads[::-1], layers[::-1], cross_dim[::-1]
        num_upsamplers = 0
        output_channel = rboc[0]
        for i, block_type in enumerate(cfg["up_block_types"]):
            is_final = i == len(boc) - 1
            prev_output_channel, output_channel = output_channel, rboc[i]
            input_channel = rboc[min(i + 1, len(boc) - 1)]
            num_upsamplers += 0 if is_final else 1
            self.up_blocks.append(UP_BLOCKS[block_type](
                in_channels=input_channel, prev_output_channel=prev_output_channel, out_channels=output_channel,
                num_layers=rlayers[i] + 1, transformer_layers_per_block=rev_tlayers[i],
                num_attention_heads=rheads[i], cross_attention_dim=rcross[i], add_upsample=not is_final, **common))
        self.default_overall_up_factor = 2 ** num_upsamplers

        self.conv_norm_out = nn.GroupNorm(num_channels=boc[0], num_groups=groups, eps=eps)
        self.conv_act = get_activation(act)
        pad_out = (cfg["conv_out_kernel"] - 1) // 2
        self.conv_out = nn.Conv2d(boc[0], cfg["out_channels"], kernel_size=cfg["conv_out_kernel"], padding=pad_out)
        # the number of tensors forward_attention_control records (and takes as replacements)
        self.cross_attention_layers = sum(1 for m in self.modules() if isinstance(m, BasicTransformerBlock))

    def forward(self, sample: Tensor, timestep: Tensor, encoder_hidden_states: Tensor,
                text_embeds: Optional[Tensor] = None, time_ids: Optional[Tensor] = None) -> Tensor:
        dtype = self.conv_in.weight.dtype
        sample = sample.to(dtype)  # (B, Cin, H, W)
        encoder_hidden_states = encoder_hidden_states.to(dtype)  # (B, T, D)
        forward_upsample_size = False
        for d in sample.shape[-2:]:
            if d % self.default_overall_up_factor != 0:
                forward_upsample_size = True
        if self.center_input_sample:
            sample = 2 * sample - 1.0

        # 1. time
        timesteps = timestep
        if timesteps.dim() == 0:
            timesteps = timesteps[None]
        timesteps = timesteps.to(sample.device).expand(sample.shape[0])  # (B,)
        t_emb = self.time_proj(timesteps).to(dtype)  # (B, C0)
        emb = self.time_embedding(t_emb)  # (B, E)
        if self.add_time_proj is not None and self.add_embedding is not None:
            if text_embeds is None or time_ids is None:
                raise RuntimeError("this UNet (addition_embed_type='text_time') needs text_embeds and time_ids")
            time_embeds = self.add_time_proj(time_ids.flatten())  # (B*6, A) float32
            time_embeds = time_embeds.reshape(text_embeds.shape[0], -1)  # (B, 6*A)
            add_embeds = torch.cat([text_embeds.to(torch.float32), time_embeds.to(torch.float32)], dim=-1)
            aug_emb = self.add_embedding(add_embeds.to(emb.dtype))  # (B, E)
            emb = emb + aug_emb

        # 2. pre-process
        sample = self.conv_in(sample)  # (B, C0, H, W)

        # 3. down
        down_block_res_samples: List[Tensor] = [sample]
        for downsample_block in self.down_blocks:
            sample, res_samples = downsample_block(sample, emb, encoder_hidden_states)
            down_block_res_samples += res_samples

        # 4. mid
        sample = self.mid_block(sample, emb, encoder_hidden_states)  # (B, Clast, h, w)

        # 5. up
        upsample_size: Optional[List[int]] = None
        num_up = len(self.up_blocks)
        for i, upsample_block in enumerate(self.up_blocks):
            is_final_block = i == num_up - 1
            n_res = upsample_block.num_resnets
            if not is_final_block and forward_upsample_size:
                upsample_size = down_block_res_samples[len(down_block_res_samples) - n_res - 1].shape[2:]
            sample = upsample_block(sample, down_block_res_samples, emb, encoder_hidden_states, upsample_size)

        # 6. post-process
        sample = self.conv_norm_out(sample)
        sample = self.conv_act(sample)
        return self.conv_out(sample)  # (B, Cout, H, W)

    @torch.jit.export
    def forward_attention_control(self, sample: Tensor, timestep: Tensor, encoder_hidden_states: Tensor,
                                  replacements: List[Tensor], own_weight: Optional[Tensor] = None,
                                  text_embeds: Optional[Tensor] = None, time_ids: Optional[Tensor] = None
                                  ) -> Tuple[Tensor, List[Tensor]]:
        """``forward`` with its cross-attention recorded and optionally replaced (see the module doc).
        Mirrors ``forward`` step for step; scripts/tests check the two agree bit for bit."""
        if len(replacements) != 0 and len(replacements) != self.cross_attention_layers:
            raise RuntimeError("forward_attention_control: {} replacements for {} cross-attention layers".format(
                len(replacements), self.cross_attention_layers))
        recorded: List[Tensor] = []
        dtype = self.conv_in.weight.dtype
        sample = sample.to(dtype)  # (B, Cin, H, W)
        encoder_hidden_states = encoder_hidden_states.to(dtype)  # (B, T, D)
        forward_upsample_size = False
        for d in sample.shape[-2:]:
            if d % self.default_overall_up_factor != 0:
                forward_upsample_size = True
        if self.center_input_sample:
            sample = 2 * sample - 1.0

        # 1. time
        timesteps = timestep
        if timesteps.dim() == 0:
            timesteps = timesteps[None]
        timesteps = timesteps.to(sample.device).expand(sample.shape[0])  # (B,)
        t_emb = self.time_proj(timesteps).to(dtype)  # (B, C0)
        emb = self.time_embedding(t_emb)  # (B, E)
        if self.add_time_proj is not None and self.add_embedding is not None:
            if text_embeds is None or time_ids is None:
                raise RuntimeError("this UNet (addition_embed_type='text_time') needs text_embeds and time_ids")
            time_embeds = self.add_time_proj(time_ids.flatten())  # (B*6, A) float32
            time_embeds = time_embeds.reshape(text_embeds.shape[0], -1)  # (B, 6*A)
            add_embeds = torch.cat([text_embeds.to(torch.float32), time_embeds.to(torch.float32)], dim=-1)
            aug_emb = self.add_embedding(add_embeds.to(emb.dtype))  # (B, E)
            emb = emb + aug_emb

        # 2. pre-process
        sample = self.conv_in(sample)  # (B, C0, H, W)

        # 3. down
        down_block_res_samples: List[Tensor] = [sample]
        for downsample_block in self.down_blocks:
            sample, res_samples = downsample_block.forward_attention_control(
                sample, emb, encoder_hidden_states, replacements, own_weight, recorded)
            down_block_res_samples += res_samples

        # 4. mid
        sample = self.mid_block.forward_attention_control(sample, emb, encoder_hidden_states, replacements, own_weight,
                                                          recorded)  # (B, Clast, h, w)

        # 5. up
        upsample_size: Optional[List[int]] = None
        num_up = len(self.up_blocks)
        for i, upsample_block in enumerate(self.up_blocks):
            is_final_block = i == num_up - 1
            n_res = upsample_block.num_resnets
            if not is_final_block and forward_upsample_size:
                upsample_size = down_block_res_samples[len(down_block_res_samples) - n_res - 1].shape[2:]
            sample = upsample_block.forward_attention_control(sample, down_block_res_samples, emb,
                                                              encoder_hidden_states, upsample_size, replacements,
                                                              own_weight, recorded)

        # 6. post-process
        sample = self.conv_norm_out(sample)
        sample = self.conv_act(sample)
        return self.conv_out(sample), recorded  # (B, Cout, H, W), [(B, heads, HW, T)] per cross-attention layer
