"""CLIP text encoders with transformers' config keys and state-dict names.

CLIPTextModel.forward(input_ids (B, T) int, attention_mask: Optional (B, T) 1=keep/0=pad = None)
    -> (last_hidden_state (B, T, D), pooled_output (B, D), penultimate_hidden_state (B, T, D))
CLIPTextModelWithProjection.forward(input_ids, attention_mask=None)
    -> (last_hidden_state, pooled_output, penultimate_hidden_state, text_embeds (B, projection_dim))

last_hidden_state has final_layer_norm applied; penultimate_hidden_state is transformers'
hidden_states[-2] (the input of the last encoder layer, no final norm; what SDXL uses).
pooled_output is final-normed last_hidden_state at the EOS position: argmax(input_ids) when
eos_token_id == 2 (legacy configs), else the first position where input_ids == eos_token_id.
Extra exported methods (both classes):
  all_hidden_states(input_ids, attention_mask=None) -> List[Tensor]: embeddings output followed by
      every layer's output (num_hidden_layers + 1 tensors), as transformers' output_hidden_states.
  final_layer_norm(hidden (B, T, D)) -> Tensor   (diffusers' clip_skip for SD 1.x/2.x uses it).
"""
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .attention import AttentionKernel

DEFAULT_CONFIG: Dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "projection_dim": 512,
    "num_hidden_layers": 12, "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5, "attention_dropout": 0.0, "pad_token_id": 1, "bos_token_id": 49406,
    "eos_token_id": 49407,
}


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


def _activation(name: str) -> nn.Module:
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return nn.GELU(approximate="tanh")
    if name == "relu":
        return nn.ReLU()
    raise NotImplementedError(f"CLIP hidden_act {name!r} is not supported")


def _min_value(dtype: torch.dtype) -> float:
    if dtype == torch.float16:
        return -65504.0
    if dtype == torch.bfloat16:
        return -3.3895313892515355e+38
    if dtype == torch.float64:
        return -1.7976931348623157e+308
    return -3.4028234663852886e+38


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, cfg: Dict[str, Any]) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.position_embedding = nn.Embedding(cfg["max_position_embeddings"], cfg["hidden_size"])

    def forward(self, input_ids: Tensor) -> Tensor:
        seq_length = input_ids.shape[-1]
        position_ids = torch.arange(seq_length, dtype=torch.long, device=input_ids.device)[None, :]  # (1, T)
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)  # (B, T, D)


class CLIPAttention(nn.Module):
    def __init__(self, cfg: Dict[str, Any]) -> None:
        super().__init__()
        d = cfg["hidden_size"]
        self.num_heads = cfg["num_attention_heads"]
        self.head_dim = d // self.num_heads
        self.scale = float(self.head_dim) ** -0.5
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
        self.kernel = AttentionKernel()

    def forward(self, hidden_states: Tensor, mask: Optional[Tensor]) -> Tensor:
        b, t = hidden_states.shape[0], hidden_states.shape[1]
        q = self.q_proj(hidden_states).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        k = self.k_proj(hidden_states).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        v = self.v_proj(hidden_states).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        out = self.kernel(q, k, v, self.scale, mask)  # (B, H, T, Dh)
        out = out.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim)  # (B, T, D)
        return self.out_proj(out)


class CLIPMLP(nn.Module):
    def __init__(self, cfg: Dict[str, Any]) -> None:
        super().__init__()
        self.activation_fn = _activation(cfg["hidden_act"])
        self.fc1 = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])
        self.fc2 = nn.Linear(cfg["intermediate_size"], cfg["hidden_size"])

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))  # (B, T, D)


class CLIPEncoderLayer(nn.Module):
    def __init__(self, cfg: Dict[str, Any]) -> None:
        super().__init__()
        self.self_attn = CLIPAttention(cfg)
        self.layer_norm1 = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])
        self.mlp = CLIPMLP(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])

    def forward(self, hidden_states: Tensor, mask: Optional[Tensor]) -> Tensor:
        residual = hidden_states
        hidden_states = self.self_attn(self.layer_norm1(hidden_states), mask)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.mlp(self.layer_norm2(hidden_states))
        return residual + hidden_states  # (B, T, D)


class CLIPEncoder(nn.Module):
    def __init__(self, cfg: Dict[str, Any]) -> None:
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(cfg) for _ in range(cfg["num_hidden_layers"])])


class CLIPTextTransformer(nn.Module):
    def __init__(self, cfg: Dict[str, Any]) -> None:
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(cfg)
        self.encoder = CLIPEncoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])
        self.eos_token_id = int(cfg["eos_token_id"])

    def hidden_states(self, input_ids: Tensor, attention_mask: Optional[Tensor]) -> List[Tensor]:
        input_ids = input_ids.long()  # (B, T)
        hidden = self.embeddings(input_ids)  # (B, T, D)
        dtype = hidden.dtype
        t = input_ids.shape[-1]
        min_value = _min_value(dtype)
        causal = torch.full([t, t], min_value, dtype=dtype, device=hidden.device)
        mask = torch.triu(causal, diagonal=1)[None, None, :, :]  # (1, 1, T, T) additive
        if attention_mask is not None:
            inverted = 1.0 - attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T)
            inverted = inverted.masked_fill(inverted.to(torch.bool), min_value)
            mask = mask + inverted  # (B, 1, T, T)
        states: List[Tensor] = [hidden]
        for layer in self.encoder.layers:
            hidden = layer(hidden, mask)
            states.append(hidden)
        return states

    def pool(self, last_hidden_state: Tensor, input_ids: Tensor) -> Tensor:
        ids = input_ids.to(torch.int)
        if self.eos_token_id == 2:
            index = ids.argmax(dim=-1)  # (B,)
        else:
            index = (ids == self.eos_token_id).int().argmax(dim=-1)  # (B,)
        batch = torch.arange(last_hidden_state.shape[0], device=last_hidden_state.device)
        return last_hidden_state[batch, index.to(last_hidden_state.device)]  # (B, D)

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None
                ) -> Tuple[Tensor, Tensor, Tensor]:
        states = self.hidden_states(input_ids, attention_mask)
        last_hidden_state = self.final_layer_norm(states[-1])  # (B, T, D)
        pooled = self.pool(last_hidden_state, input_ids)
        return last_hidden_state, pooled, states[-2]


def resolve_clip_config(config: Dict[str, Any]) -> Dict[str, Any]:
    cfg = dict(DEFAULT_CONFIG)
    src = dict(config)
    if "text_config" in src and isinstance(src["text_config"], dict):  # a full CLIPConfig
        src = dict(src["text_config"])
    cfg.update({k: v for k, v in src.items() if not k.startswith("_")})
    return cfg


class CLIPTextModel(nn.Module):
    __jit_ignored_attributes__ = ["config"]

    def __init__(self, config: Dict[str, Any]) -> None:
        super().__init__()
        self.config = resolve_clip_config(config)
        self.text_model = CLIPTextTransformer(self.config)

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None
                ) -> Tuple[Tensor, Tensor, Tensor]:
        return self.text_model(input_ids, attention_mask)

    @torch.jit.export
    def all_hidden_states(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None) -> List[Tensor]:
        return self.text_model.hidden_states(input_ids, attention_mask)

    @torch.jit.export
    def final_layer_norm(self, hidden_states: Tensor) -> Tensor:
        return self.text_model.final_layer_norm(hidden_states)


class CLIPTextModelWithProjection(nn.Module):
    __jit_ignored_attributes__ = ["config"]

    def __init__(self, config: Dict[str, Any]) -> None:
        super().__init__()
        self.config = resolve_clip_config(config)
        self.text_model = CLIPTextTransformer(self.config)
        self.text_projection = nn.Linear(self.config["hidden_size"], self.config["projection_dim"], bias=False)

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None
                ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        last_hidden_state, pooled, penultimate = self.text_model(input_ids, attention_mask)
        text_embeds = self.text_projection(pooled)  # (B, P)
        return last_hidden_state, pooled, penultimate, text_embeds

    @torch.jit.export
    def all_hidden_states(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None) -> List[Tensor]:
        return self.text_model.hidden_states(input_ids, attention_mask)

    @torch.jit.export
    def final_layer_norm(self, hidden_states: Tensor) -> Tensor:
        return self.text_model.final_layer_norm(hidden_states)


def convert_clip_state_dict(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Drop buffers that older transformers checkpoints saved (position_ids)."""
    return {k: v for k, v in state_dict.items() if not k.endswith("embeddings.position_ids")}
