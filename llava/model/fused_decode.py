"""One decoder layer of a decode step with fused norms and RoPE (the CUDA-graph decode's layer, fp16).

A LlamaDecoderLayer launches ~40 kernels for one token, ~20 of them elementwise (RMSNorm's six, RoPE's ten):
at batch 1 those cost about as much GPU time as the weight-bound projections. This runs the same layer from
the module's own weights with RMSNorm and RoPE as one Triton kernel each (visiondrop.kernels: the same rounding
points, RoPE bit-equal, RMSNorm up to the fp32 summation order of its mean square); projections, attention and
the MLP are the module's."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def fused_applies(hidden: torch.Tensor, layer: nn.Module) -> bool:
    """fp16 (the kernels' dtype), as many key / value heads as query heads, a SiLU MLP."""
    attn, config = layer.self_attn, getattr(layer.mlp, "config", None)
    return (hidden.dtype == torch.float16 and attn.q_proj.out_features == attn.k_proj.out_features
            and config is not None and config.hidden_act == "silu")


def decode_layer(layer: nn.Module, hidden: torch.Tensor, rope: tuple, cache, mask: torch.Tensor | None):
    """`layer(hidden, attention_mask=mask, position_embeddings=rope, past_key_values=cache)` for hidden
    [B, T, D] fp16 (T = 1 in decode), with the fused kernels."""
    from visiondrop import kernels

    attn, mlp = layer.self_attn, layer.mlp
    batch, n, _ = hidden.shape
    heads = (batch, n, -1, attn.head_dim)
    x = kernels.rms_norm(hidden, layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon)
    cos, sin = rope
    q = kernels.rope(attn.q_proj(x).view(heads), cos, sin).transpose(1, 2)
    k = kernels.rope(attn.k_proj(x).view(heads), cos, sin).transpose(1, 2)
    v = attn.v_proj(x).view(heads).transpose(1, 2)
    keys, values = cache.update(k, v, attn.layer_idx)
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=attn.scaling)
    hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(batch, n, -1))
    x = kernels.rms_norm(hidden, layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon)
    return hidden + mlp.down_proj(F.silu(mlp.gate_proj(x)) * mlp.up_proj(x))
