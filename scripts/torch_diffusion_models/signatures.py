"""Machine-readable description of the TorchScript methods each exported model offers.

Written into every exported component's torch_diffusion.json (and model_index.json), so the
TypeScript side can check what it calls. Shapes use B=batch, T=tokens, H/W=pixels or latents.
"""
from typing import Any, Dict, List


def _t(name: str, shape: str, dtype: str = "float", optional: bool = False, note: str = "") -> Dict[str, Any]:
    d: Dict[str, Any] = {"name": name, "shape": shape, "dtype": dtype}
    if optional:
        d["optional"] = True
    if note:
        d["note"] = note
    return d


_FLOAT_NOTE = "cast to the model dtype inside"

METHODS: Dict[str, Dict[str, Any]] = {
    "UNet2DConditionModel": {
        "forward": {
            "inputs": [_t("sample", "(B, in_channels, H, W)", note=_FLOAT_NOTE),
                       _t("timestep", "() or (B,) or (1,)", "int64|float", note="broadcast to B"),
                       _t("encoder_hidden_states", "(B, T, cross_attention_dim)", note=_FLOAT_NOTE),
                       _t("text_embeds", "(B, projection_class_embeddings_input_dim - 6*addition_time_embed_dim)",
                          optional=True, note="required when addition_embed_type == 'text_time'"),
                       _t("time_ids", "(B, 6)", optional=True,
                          note="required when addition_embed_type == 'text_time'")],
            "outputs": [_t("sample", "(B, out_channels, H, W)", note="model dtype")],
        },
        "forward_attention_control": {
            "inputs": [_t("sample", "(B, in_channels, H, W)", note=_FLOAT_NOTE),
                       _t("timestep", "() or (B,) or (1,)", "int64|float", note="broadcast to B"),
                       _t("encoder_hidden_states", "(B, T, cross_attention_dim)", note=_FLOAT_NOTE),
                       _t("replacements", "List[(B, heads, H_l*W_l, T)] of the cross-attention layers, or []",
                          note="[]: the layers' own attention (the prediction equals forward's); else each layer "
                               "attends with replacement + own_weight * its own probabilities"),
                       _t("own_weight", "broadcastable to (B, heads, H_l*W_l, T), e.g. (B, 1, 1, T)", optional=True,
                          note="None: 0 (the replacement alone); unused without replacements"),
                       _t("text_embeds", "as forward", optional=True, note="as forward"),
                       _t("time_ids", "as forward", optional=True, note="as forward")],
            "outputs": [_t("sample", "(B, out_channels, H, W)", note="model dtype; forward's prediction"),
                        _t("attention_probs", "List[(B, heads, H_l*W_l, T)]", "float32",
                           note="softmax(QK^T) of each cross-attention layer: down blocks, mid, up blocks")],
        },
    },
    "AutoencoderKL": {
        "encode": {"inputs": [_t("x", "(B, in_channels, H, W)", note=_FLOAT_NOTE)],
                   "outputs": [_t("moments", "(B, 2*latent_channels, H/f, W/f)",
                                  note="mean, logvar = chunk(2, dim=1); logvar.clamp(-30, 20)")]},
        "decode": {"inputs": [_t("z", "(B, latent_channels, h, w)", note="unscaled latents; " + _FLOAT_NOTE)],
                   "outputs": [_t("sample", "(B, out_channels, h*f, w*f)")]},
        "forward": {"inputs": [_t("x", "(B, in_channels, H, W)")],
                    "outputs": [_t("sample", "(B, out_channels, H, W)", note="decode(mean)")]},
    },
    "CLIPTextModel": {
        "forward": {
            "inputs": [_t("input_ids", "(B, T)", "int64"),
                       _t("attention_mask", "(B, T)", "int64|float", optional=True, note="1 keep, 0 pad")],
            "outputs": [_t("last_hidden_state", "(B, T, hidden_size)", note="after final_layer_norm"),
                        _t("pooled_output", "(B, hidden_size)", note="last_hidden_state at EOS"),
                        _t("penultimate_hidden_state", "(B, T, hidden_size)", note="hidden_states[-2], no norm")],
        },
        "all_hidden_states": {"inputs": "as forward",
                              "outputs": [_t("hidden_states", "List[(B, T, hidden_size)] of num_hidden_layers+1")]},
        "final_layer_norm": {"inputs": [_t("hidden_states", "(B, T, hidden_size)")],
                             "outputs": [_t("normed", "(B, T, hidden_size)")]},
    },
    "DiTTransformer2DModel": {
        "forward": {
            "inputs": [_t("hidden_states", "(B, in_channels, H, W)", note=_FLOAT_NOTE),
                       _t("timestep", "() or (B,) or (1,)", "int64|float", note="broadcast to B"),
                       _t("class_labels", "() or (B,) or (1,)", "int64", note="num_embeds_ada_norm = null class")],
            "outputs": [_t("sample", "(B, out_channels, H, W)",
                           note="learned sigma: first in_channels channels are the noise prediction")],
        },
    },
}
METHODS["CLIPTextModelWithProjection"] = {
    **METHODS["CLIPTextModel"],
    "forward": {
        "inputs": METHODS["CLIPTextModel"]["forward"]["inputs"],
        "outputs": METHODS["CLIPTextModel"]["forward"]["outputs"] + [
            _t("text_embeds", "(B, projection_dim)", note="text_projection(pooled_output)")],
    },
}
METHODS["Transformer2DModel"] = METHODS["DiTTransformer2DModel"]


def methods_for(class_name: str) -> Dict[str, Any]:
    return METHODS[class_name]


def output_names(class_name: str, method: str = "forward") -> List[str]:
    return [o["name"] for o in METHODS[class_name][method]["outputs"]]
