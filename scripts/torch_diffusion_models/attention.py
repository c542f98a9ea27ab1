"""Scaled dot-product attention used by every model in this package.

Layout everywhere: q, k, v are ``[batch, heads, tokens, head_dim]``.

Two paths:

* ``attention(q, k, v, scale, mask)`` -- the single attention function.  In eager
  Python it dispatches to ``torch.ops.torch_diffusion.attention`` when the
  module-level switch (``set_fused_attention(True)``) is on, otherwise it runs the
  plain math below.  When compiled by TorchScript it is always the math path.
* ``AttentionKernel`` -- a parameter-free ``nn.Module`` owned by every attention
  layer.  Its ``fused`` flag is a TorchScript *constant* (``Final``), captured from
  the module-level switch when the layer is built (or set later with
  ``set_fused_attention(flag, model)``).  ``torch.jit.script`` only compiles the
  chosen branch, so a non-fused export contains no reference to the custom op and
  loads in any libtorch; a fused export records ``torch_diffusion::attention`` and
  needs that op registered (by the Node addon) before ``torch::jit::load``.

Custom op schema (namespace ``torch_diffusion``)::

    attention(Tensor q, Tensor k, Tensor v, float? scale=None, Tensor? mask=None) -> Tensor

The op is defined lazily (``ensure_attention_op()``, called whenever a fused path is switched
on), never at import: when a native library (TORCH_LIBRARY(torch_diffusion)) is already loaded,
its kernel is used; otherwise we define it here with the math kernel below for CPU and CUDA.

``scale`` None means ``head_dim ** -0.5``.  ``mask`` broadcasts to
``[batch, heads, q_tokens, k_tokens]``; a bool mask keeps positions where True, a
floating mask is added to the scores.  Scores, softmax and the weighted sum are
accumulated in float32 (float64 stays float64); the result has q's dtype.
"""
from typing import Optional

import torch
from torch import Tensor, nn

try:  # PyTorch >= 1.13 / Python >= 3.8
    from typing import Final
except ImportError:  # pragma: no cover
    from torch.jit import Final  # type: ignore

OP_SCHEMA = "attention(Tensor q, Tensor k, Tensor v, float? scale=None, Tensor? mask=None) -> Tensor"
OP_NAME = "torch_diffusion::attention"

_FUSED = False  # module-level switch


def math_attention(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float] = None,
                   mask: Optional[Tensor] = None) -> Tensor:
    """softmax(q k^T * scale + mask) v with float32 accumulation."""
    s = float(q.size(-1)) ** -0.5 if scale is None else scale
    in_dtype = q.dtype
    if in_dtype != torch.float32 and in_dtype != torch.float64:
        q = q.float()
        k = k.float()
        v = v.float()
    scores = torch.matmul(q, k.transpose(-1, -2)) * s  # (B, H, Tq, Tk)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(mask.logical_not(), float("-inf"))
        else:
            scores = scores + mask.to(scores.dtype)
    probs = torch.softmax(scores, dim=-1)  # (B, H, Tq, Tk)
    out = torch.matmul(probs, v.to(probs.dtype))  # (B, H, Tq, D)
    return out.to(in_dtype)


_LIB = None  # our torch.library.Library, when we defined the op (dropping it unregisters the op)


def attention_op_defined() -> bool:
    """True when torch_diffusion::attention exists in this process (ours or a native library's)."""
    try:
        torch.ops.torch_diffusion.attention  # noqa: B018
        return True
    except (RuntimeError, AttributeError):
        return False


def ensure_attention_op() -> str:
    """Make torch_diffusion::attention callable and return who provides it: "native" when something
    else (the native kernels library / Node addon, TORCH_LIBRARY(torch_diffusion)) defined it first,
    "python" when we define it here with the math kernel for CPU and CUDA.

    Called lazily (fused paths only), never at import: PyTorch 1.13 allows a single definer of the
    namespace, so after we define it a native TORCH_LIBRARY(torch_diffusion) cannot load in the same
    process; load native kernels first when both are wanted.
    """
    global _LIB
    if _LIB is not None:
        return "python"
    if attention_op_defined():
        return "native"
    lib = torch.library.Library("torch_diffusion", "DEF")
    lib.define(OP_SCHEMA)

    def _impl(q, k, v, scale=None, mask=None):
        return math_attention(q, k, v, scale, mask)

    for key in ("CPU", "CUDA"):
        try:
            lib.impl("attention", _impl, key)
        except RuntimeError:  # pragma: no cover - backend not built
            pass
    _LIB = lib
    return "python"


def fused_attention(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float] = None,
                    mask: Optional[Tensor] = None) -> Tensor:
    """Eager call of the custom op (defining it first if nobody has)."""
    ensure_attention_op()
    return torch.ops.torch_diffusion.attention(q, k, v, scale, mask)


def attention(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float] = None,
              mask: Optional[Tensor] = None) -> Tensor:
    """The attention function; q/k/v are (B, H, T, D)."""
    if torch.jit.is_scripting():
        return math_attention(q, k, v, scale, mask)
    else:
        if _FUSED:
            return fused_attention(q, k, v, scale, mask)
        return math_attention(q, k, v, scale, mask)


def fused_attention_enabled() -> bool:
    return _FUSED


def set_fused_attention(enabled: bool, model: Optional[nn.Module] = None) -> None:
    """Without ``model``: flip the module-level switch (used by ``attention()`` in eager mode and
    captured by attention layers built afterwards).  With ``model``: flip only the
    ``AttentionKernel`` flags inside that model (do this before ``torch.jit.script``)."""
    global _FUSED
    if enabled:
        ensure_attention_op()
    if model is None:
        _FUSED = bool(enabled)
        return
    for m in model.modules():
        if isinstance(m, AttentionKernel):
            m.fused = bool(enabled)


class AttentionKernel(nn.Module):
    """Parameter-free dispatcher owned by each attention layer (see module doc)."""

    fused: Final[bool]

    def __init__(self) -> None:
        super().__init__()
        self.fused = _FUSED
        if self.fused:
            ensure_attention_op()

    def forward(self, q: Tensor, k: Tensor, v: Tensor, scale: Optional[float],
                mask: Optional[Tensor]) -> Tensor:
        if self.fused:
            return torch.ops.torch_diffusion.attention(q, k, v, scale, mask)
        return attention(q, k, v, scale, mask)


def attention_probs(q: Tensor, k: Tensor, scale: Optional[float] = None) -> Tensor:
    """softmax(q k^T * scale) exactly as ``math_attention`` computes it (no mask): (B, H, Tq, Tk) in float32
    (float64 stays float64). Used where the probabilities themselves are wanted (prompt-to-prompt's
    attention control); ``attend_probs(attention_probs(q, k, s), v)`` equals ``math_attention(q, k, v, s)``
    bit for bit."""
    s = float(q.size(-1)) ** -0.5 if scale is None else scale
    if q.dtype != torch.float32 and q.dtype != torch.float64:
        q = q.float()
        k = k.float()
    scores = torch.matmul(q, k.transpose(-1, -2)) * s  # (B, H, Tq, Tk)
    return torch.softmax(scores, dim=-1)


def attend_probs(probs: Tensor, v: Tensor) -> Tensor:
    """probs @ v as ``math_attention`` finishes: in the probabilities' dtype, back in v's. (B, H, Tq, D)"""
    return torch.matmul(probs, v.to(probs.dtype)).to(v.dtype)
