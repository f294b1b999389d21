"""Importance scores computed from q/k projections, never from the attention kernel.

LLM boundaries use the next layer's input norm and q/k projections with RoPE on the current positions
(the layer about to run), over one sample's real tokens, in query chunks so memory stays bounded and
every layer keeps its fast attention kernel. Encoder stages use the tower layer's CLS attention. The model is read
only through the views of visiondrop.layers.
"""

from __future__ import annotations

import functools
import math

import torch

from visiondrop.layers import DecoderLayerView


def take_rows(x: torch.Tensor, rows: torch.Tensor | slice) -> torch.Tensor:
    """x[rows] for rows [Q] or a slice (a view), or x[b, rows[b]] for a batch x [B, T, ...] and rows [B, Q]."""
    if isinstance(rows, slice):
        return x[rows]
    if rows.dim() == 1:
        return x.index_select(0, rows)
    batch, n = rows.shape
    step, offset = divmod(x.stride(0), x.stride(1)) if x.stride(1) > 0 else (0, 1)
    if offset:
        return x[batch_rows(batch, rows.device), rows]
    # Every sample's rows as one row axis of the storage (also for views sliced along dim 1): one row-copy kernel
    # instead of indexing element by element.
    flat = x.as_strided(((batch - 1) * step + x.shape[1], *x.shape[2:]), (x.stride(1), *x.stride()[2:]))
    return flat.index_select(0, (rows + batch_rows(batch, rows.device) * step).flatten()).unflatten(0, (batch, n))


@functools.lru_cache(maxsize=64)
def batch_rows(batch: int, device: torch.device) -> torch.Tensor:
    """[[0], [1], ..., [batch - 1]] on `device` (cached: built once per batch size)."""
    return torch.arange(batch, device=device)[:, None]


def llm_query_key(hidden: torch.Tensor, layer: DecoderLayerView, cos: torch.Tensor, sin: torch.Tensor,
                  query_rows: torch.Tensor | slice, fused: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Post-RoPE queries [..., Q, H, d] (for `query_rows`) and keys [..., T, H, d] (all rows, GQA-expanded)
    from `layer`'s input norm and q/k projections; `hidden` is [T, D] or a batch [B, T, D] (then rows are
    [B, Q] indices, or a slice shared by every row). `fused`: norm and RoPE as Triton kernels (a batch and a
    slice of rows; see `visiondrop.execution.fused_applies`)."""
    z = layer.normed(hidden, fused)

    def rows(x: torch.Tensor) -> torch.Tensor:
        return x[..., query_rows, :] if isinstance(query_rows, slice) else take_rows(x, query_rows)

    q = layer.rotate(layer.queries(rows(z)), rows(cos), rows(sin), fused)
    k = layer.rotate(layer.keys(z), cos, sin, fused)
    groups = q.shape[-2] // k.shape[-2]
    return q, k.repeat_interleave(groups, dim=-2) if groups > 1 else k


def attention_to_columns(q: torch.Tensor, k: torch.Tensor, query_pos: torch.Tensor, columns: slice | torch.Tensor,
                         memory_mib: float = 128, fp32_softmax: bool = True) -> torch.Tensor:
    """Mean over queries of the head-mean causal attention they pay to `columns` of the keys.

    q [..., Q, H, d] sits at sequence indices `query_pos` [..., Q]; k [..., T, H, d] covers indices 0..T-1
    (right padding lies beyond every real query, so the causal mask also hides it). `columns` is a slice or
    per-sample indices [..., N]. Faithful numerics: logits q.k / sqrt(d) in the model dtype, causal mask over
    the whole prefix, softmax in fp32 cast back, mean over heads; the query mean is accumulated in fp32.
    `fp32_softmax=False` takes the softmax in the model dtype (SparseVLM). Queries are processed in chunks
    whose attention maps (about 6 bytes per entry at the peak) fit in `memory_mib`.
    """
    dtype = k.dtype
    batch, heads, n_keys = q[..., 0, 0, 0].numel(), q.shape[-2], k.shape[-3]
    rows_per_step = max(1, int(memory_mib * 2**20) // (6 * batch * heads * n_keys))
    key_pos = torch.arange(n_keys, device=k.device)
    keys = k.movedim(-3, -1)  # [..., H, d, T], laid out once for every chunk
    total = None
    for i in range(0, q.shape[-3], rows_per_step):
        logits = torch.matmul(q[..., i:i + rows_per_step, :, :].transpose(-2, -3), keys)  # [..., H, c, T]
        logits.div_(math.sqrt(q.shape[-1]))
        future = key_pos > query_pos[..., i:i + rows_per_step, None]
        logits.masked_fill_(future[..., None, :, :], float("-inf"))
        if fp32_softmax:
            probs32 = logits.softmax(dim=-1, dtype=torch.float32)
            del logits
            probs = probs32.to(dtype)
            del probs32
        else:
            probs = logits.softmax(dim=-1)
            del logits
        probs = probs.mean(dim=-3)
        if isinstance(columns, slice):
            probs = probs[..., columns]
        else:
            probs = take_rows(probs.transpose(-1, -2), columns).transpose(-1, -2)
        part = probs.float().sum(dim=-2)
        total = part if total is None else total + part
    return (total / q.shape[-3]).to(dtype)


def visual_attention(q: torch.Tensor, k: torch.Tensor, first: int, memory_mib: float = 128) -> torch.Tensor:
    """VisionDrop's score [B, N]: mean attention that the visual queries q [B, N, H, d] (sequence indices
    first..first+N-1) pay to each visual key, over keys k [B, T, H, d], in query chunks of `memory_mib`
    (`kernels.visual_attention_scores` computes the same in fp16 without storing attention maps)."""
    n = q.shape[-3]
    return attention_to_columns(q, k, torch.arange(first, first + n, device=q.device), slice(first, first + n),
                                memory_mib)


def last_token_attention(hidden: torch.Tensor, layer: DecoderLayerView, cos: torch.Tensor, sin: torch.Tensor,
                         columns: slice, last: torch.Tensor | None = None) -> torch.Tensor:
    """Head-mean causal attention of the last token to `columns`, with `layer`'s norm, q/k and RoPE (the FastV /
    PDrop score). `hidden` is one sample [T, D] (last row), or a right-padded batch [B, T, D] with each row's
    last real index in `last` [B]."""
    if last is None:
        last = torch.tensor([hidden.shape[-2] - 1], device=hidden.device)
    else:
        last = last.to(hidden.device)[:, None]
    q, k = llm_query_key(hidden, layer, cos, sin, last)
    return attention_to_columns(q, k, last, columns)
