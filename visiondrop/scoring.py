"""Importance scores computed from q/k projections, never from the attention kernel.

LLM boundaries use the next layer's input norm and q/k projections with RoPE on the current positions
(the layer about to run), over one sample's real tokens, in query chunks so memory stays bounded and
every layer keeps its fast attention kernel. Encoder stages use the selected CLIP layer's [CLS] query.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.llama.modeling_llama import rotate_half


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on [T, H, d] with cos/sin [T, d]."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def llm_query_key(hidden: torch.Tensor, layer: nn.Module, cos: torch.Tensor, sin: torch.Tensor,
                  query_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Post-RoPE queries [q, H, d] (for `query_rows`) and keys [T, H, d] (all rows, GQA-expanded)."""
    attn = layer.self_attn
    z = layer.input_layernorm(hidden)
    head_dim = attn.head_dim
    q = attn.q_proj(z[query_rows]).view(len(query_rows), -1, head_dim)
    k = attn.k_proj(z).view(z.shape[0], -1, head_dim)
    q = _rope(q, cos[query_rows], sin[query_rows])
    k = _rope(k, cos, sin)
    groups = q.shape[1] // k.shape[1]
    return q, k.repeat_interleave(groups, dim=1) if groups > 1 else k


def attention_to_columns(q: torch.Tensor, k: torch.Tensor, query_pos: torch.Tensor, columns: slice,
                         chunk: int = 256, fp32_softmax: bool = True) -> torch.Tensor:
    """Mean over queries of the head-mean causal attention they pay to `columns` of the keys.

    Faithful numerics: logits q.k/sqrt(d) with a causal mask over the whole prefix, softmax in fp32, probs
    cast to the model dtype, mean over heads; the query mean is accumulated in fp32 and cast once.
    `fp32_softmax=False` takes the softmax in the model dtype (SparseVLM's attention maps).
    """
    dtype = k.dtype
    scale = q.shape[-1] ** -0.5
    key_pos = torch.arange(k.shape[0], device=k.device)
    total = None
    for i in range(0, q.shape[0], chunk):
        logits = torch.einsum("qhd,khd->hqk", q[i:i + chunk], k).float() * scale
        logits = logits if fp32_softmax else logits.to(dtype)
        future = key_pos[None, :] > query_pos[i:i + chunk, None]
        probs = logits.masked_fill(future[None], float("-inf")).softmax(dim=-1).to(dtype)
        part = probs[:, :, columns].mean(dim=0).float().sum(dim=0)
        total = part if total is None else total + part
    return (total / q.shape[0]).to(dtype)


def last_token_attention(hidden: torch.Tensor, layer: nn.Module, cos: torch.Tensor, sin: torch.Tensor,
                         columns: slice) -> torch.Tensor:
    """Head-mean causal attention of the last row of `hidden` [T, D] to `columns`, with `layer`'s norm, q/k and
    RoPE (the FastV / PDrop score)."""
    row = torch.tensor([hidden.shape[0] - 1], device=hidden.device)
    q, k = llm_query_key(hidden, layer, cos, sin, row)
    return attention_to_columns(q, k, row, columns)


def clip_cls_attention(layer_input: torch.Tensor, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """For a CLIP encoder layer and its input [n, T, C]: the [CLS] query's attention probabilities per head
    [n, H, T] (softmax in fp32, cast back, as CLIP's eager path) and the head-mean raw keys [n, T, d]."""
    attn = layer.self_attn
    z = layer.layer_norm1(layer_input)
    n, t, _ = z.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    q = attn.q_proj(z[:, :1]).view(n, 1, heads, head_dim)
    k = attn.k_proj(z).view(n, t, heads, head_dim)
    logits = torch.einsum("nqhd,nkhd->nhk", q, k) * attn.scale
    probs = logits.float().softmax(dim=-1).to(z.dtype)
    return probs, k.mean(dim=2)
