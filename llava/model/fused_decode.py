"""The decoder layers of a decode step with fused elementwise work (the CUDA-graph decode's layers, fp16).

At batch 1 a decode step reads every weight once (~3.2 ms for a 7B model on an H200); a LlamaDecoderLayer adds
about 13 small kernels per layer (norms, RoPE, cache copies, transposes, the mask, SDPA, SiLU, products, residual
adds), each a few microseconds even when replayed from a CUDA graph: ~2.3 ms per step. Here a layer runs from the
module's own weights (the projections are its nn.Linear modules, cuBLAS) with four kernels around them
(visiondrop.kernels, visiondrop.decode_kernels):

1. residual add + input RMSNorm: the previous layer's MLP output is added here (the residual is carried across
   layers and segments, and into the final norm), so every add shares a launch with the norm after it;
2. RoPE of q and k + the write of k, v into the static cache slot + attention over the cache with the key mask
   (one launch, plus a small combine of the key chunks when the cache is longer than one chunk);
3. residual add + post-attention RMSNorm;
4. SiLU(gate) * up.

Same rounding points as the eager layer: fp16 residual adds (bit-equal), RMSNorm with fp32 statistics cast back
to fp16 (up to the fp32 summation order of the mean square), RoPE bit-equal, attention in fp32 rounded once,
SiLU rounded to fp16 before the product."""

from __future__ import annotations

import torch
from torch import nn

from visiondrop.decode_kernels import decode_attention, silu_mul
from visiondrop.kernels import add_rms_norm, rms_norm


def fused_applies(hidden: torch.Tensor, layer: nn.Module) -> bool:
    """fp16 (the kernels' dtype), as many key / value heads as query heads, a power-of-two head size, a SiLU MLP."""
    attn, config = layer.self_attn, getattr(layer.mlp, "config", None)
    return (hidden.dtype == torch.float16 and attn.q_proj.out_features == attn.k_proj.out_features
            and not attn.head_dim & (attn.head_dim - 1) and config is not None and config.hidden_act == "silu")


def _norm(norm: nn.Module, hidden: torch.Tensor, residual: torch.Tensor | None) -> tuple:
    """(hidden + residual, its RMSNorm); without a residual (None) hidden itself."""
    if residual is None:
        return hidden, rms_norm(hidden, norm.weight, norm.variance_epsilon)
    return add_rms_norm(hidden, residual, norm.weight, norm.variance_epsilon)


def decode_layer(layer: nn.Module, hidden: torch.Tensor, residual: torch.Tensor | None, rope: tuple,
                 buffers: tuple, key_mask: torch.Tensor, slot: torch.Tensor) -> tuple:
    """One LlamaDecoderLayer on a decode token: its input is hidden + residual (hidden [B, 1, D] fp16; residual
    the previous layer's MLP output, None for none); returns (the layer's residual stream after attention, its
    MLP output), whose sum is the layer's output. rope: (cos, sin) [B, 1, d]; buffers: the layer's static
    (keys, values) [B, H, C, d]; key_mask [B, C]: the keys this step sees; slot [1]: this token's cache index."""
    attn, mlp = layer.self_attn, layer.mlp
    hidden, x = _norm(layer.input_layernorm, hidden, residual)
    out = decode_attention(attn.q_proj(x), attn.k_proj(x), attn.v_proj(x), *rope, *buffers, key_mask, slot,
                           attn.scaling)
    hidden, x = _norm(layer.post_attention_layernorm, hidden, attn.o_proj(out))
    return hidden, mlp.down_proj(silu_mul(mlp.gate_proj(x), mlp.up_proj(x)))


def final_norm(norm: nn.Module, hidden: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
    """The model's final RMSNorm of hidden + residual (the last layer's pending MLP output)."""
    return _norm(norm, hidden, residual)[1]
