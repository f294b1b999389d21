"""Triton kernels for VisionDrop's visual-to-visual score with the reference rounding points
(docs/methods.md, 'LLM stages (s1–s3)').

S_j = (1/N) sum_i fp16(mean_h fp16(softmax_fp32(fp16(fp16(q_i.k) / sqrt d) + causal)[j])) for visual queries
i and visual keys j, where the softmax runs over the whole prefix (text before the image and earlier visual
tokens). The reference materialises the [H, N, T] map; here one kernel computes every query row's fp32 max and
sum of exponentials (online, in one sweep over the keys) and a second one recomputes the logits tile by tile and
accumulates the head-mean probabilities of each key column. Same rounding points as the reference, so the scores
agree up to the fp32 summation order and exp / division ulps (at most one fp16 step, rarely); no map is stored.
The scoring's RMSNorm and RoPE are here too (one kernel each instead of five or six). fp16 only.

Runs on CUDA, and on CPU under TRITON_INTERPRET=1 (how the tests exercise it without a GPU).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import triton
import triton.language as tl

NUM_WARPS = 4
NUM_STAGES = 3
COLUMN_NUM_STAGES = 2  # H200: the column sums at 2880 tokens 205 -> 175 us (352 and 258 tokens: 1-2 us less)


def block_sizes(n_queries: int) -> tuple[int, int]:
    """(query, key) tile sizes: 64 x 64 for long segments; 32 x 32 below 1024 visual tokens, where the column sums
    would otherwise run on too few programs (H200: 0.074 -> 0.059 ms at 352 tokens)."""
    return (64, 64) if n_queries >= 1024 else (32, 32)


# Triton's compiler may fold an fp32 -> fp16 -> fp32 round trip into nothing (seen on an H200 with Triton 3.6), so
# on a GPU every rounding point is inline PTX it cannot see through: two values per conversion into a packed fp16
# pair (conversions are few per SM and bound the score kernels). The interpreter keeps the casts as written.
_HALF_PTX = tl.constexpr("""{
    .reg .b32 pair;
    .reg .b16 low, high;
    cvt.rn.f16x2.f32 pair, $3, $2;
    mov.b32 {low, high}, pair;
    cvt.f32.f16 $0, low;
    cvt.f32.f16 $1, high;
}""")
OPAQUE_ROUNDING = os.environ.get("TRITON_INTERPRET", "0") != "1"


@triton.jit
def _half(x, OPAQUE: tl.constexpr):
    """fp32 x rounded to the nearest fp16 (ties to even), returned as fp32."""
    if OPAQUE:
        return tl.inline_asm_elementwise(_HALF_PTX, "=f,=f,f,f", [x], dtype=tl.float32, is_pure=True, pack=2)
    else:
        return x.to(tl.float16).to(tl.float32)


@triton.jit
def _rounded_logits(q, k, inv_sqrt_d, OPAQUE: tl.constexpr):
    """fp16(fp16(q.k) * (1 / sqrt d)) as fp32: the matmul output and the in-place division each round once."""
    return _half(_half(tl.dot(q, tl.trans(k)), OPAQUE) * inv_sqrt_d, OPAQUE)


@triton.jit
def _row_stats_kernel(q_ptr, k_ptr, max_ptr, sum_ptr, n_queries, first, n_heads, inv_sqrt_d,
                      sq_b, sq_t, sq_h, sk_b, sk_t, sk_h,
                      HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, OPAQUE: tl.constexpr):
    """Row max and sum of exp(x - max) over keys 0..first+i, for a block of visual queries of one (row, head).
    Visual queries always see key 0, so the running max is finite after the first key block."""
    block, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // n_heads, bh % n_heads
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    row_ok = rows < n_queries
    q = tl.load(q_ptr + b * sq_b + rows[:, None] * sq_t + h * sq_h + dims[None, :], mask=row_ok[:, None], other=0.0)
    query_pos = first + rows
    n_keys = first + n_queries
    end = first + (block + 1) * BLOCK_M  # past the last key any row of the block sees
    k_base = k_ptr + b * sk_b + h * sk_h
    row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    row_sum = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, end, BLOCK_N):  # online max / sum of exponentials, in fp32
        cols = start + tl.arange(0, BLOCK_N)
        k = tl.load(k_base + cols[:, None] * sk_t + dims[None, :], mask=(cols < n_keys)[:, None], other=0.0)
        x = _rounded_logits(q, k, inv_sqrt_d, OPAQUE)
        x = tl.where(cols[None, :] <= query_pos[:, None], x, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(x, axis=1))
        row_sum = row_sum * tl.exp(row_max - new_max) + tl.sum(tl.exp(x - new_max[:, None]), axis=1)
        row_max = new_max
    out = bh * n_queries + rows
    tl.store(max_ptr + out, row_max, mask=row_ok)
    tl.store(sum_ptr + out, row_sum, mask=row_ok)


@triton.jit
def _column_sums_kernel(q_ptr, k_ptr, max_ptr, sum_ptr, part_ptr, n_queries, first, n_heads, inv_sqrt_d,
                        sq_b, sq_t, sq_h, sk_b, sk_t, sk_h,
                        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, OPAQUE: tl.constexpr):
    """For a block of visual keys and a block of visual queries of one row: sum over the queries of the fp16
    head mean of the fp16 probabilities; written to part[b, query block, keys] (summed afterwards)."""
    key_block, query_block, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = query_block * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = key_block * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < n_queries
    if query_block * BLOCK_M + BLOCK_M - 1 >= key_block * BLOCK_N:  # else no query of the block sees these keys
        dims = tl.arange(0, HEAD_DIM)
        row_ok = rows < n_queries
        visible = (cols[None, :] <= rows[:, None]) & row_ok[:, None]
        head_sum = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for h in range(n_heads):
            q = tl.load(q_ptr + b * sq_b + rows[:, None] * sq_t + h * sq_h + dims[None, :],
                        mask=row_ok[:, None], other=0.0)
            k = tl.load(k_ptr + b * sk_b + (first + cols[:, None]) * sk_t + h * sk_h + dims[None, :],
                        mask=col_ok[:, None], other=0.0)
            x = _rounded_logits(q, k, inv_sqrt_d, OPAQUE)
            stats = (b * n_heads + h) * n_queries + rows
            row_max = tl.load(max_ptr + stats, mask=row_ok, other=0.0)
            row_sum = tl.load(sum_ptr + stats, mask=row_ok, other=1.0)
            p = tl.exp(x - row_max[:, None]) / row_sum[:, None]
            head_sum += _half(tl.where(visible, p, 0.0), OPAQUE)
        head_mean = _half(head_sum / n_heads, OPAQUE)
        column_sums = tl.sum(head_mean, axis=0)
    else:
        column_sums = tl.zeros([BLOCK_N], tl.float32)
    tl.store(part_ptr + (b * tl.num_programs(1) + query_block) * n_queries + cols, column_sums, mask=col_ok)


@triton.jit
def _rms_norm_kernel(x_ptr, r_ptr, w_ptr, out_ptr, sum_ptr, n_tokens, width, eps, sx_b, sx_t, BLOCK: tl.constexpr,
                     RESIDUAL: tl.constexpr, OPAQUE: tl.constexpr):
    """One token: weight * fp16(h * rsqrt(mean(h^2) + eps)) with the statistics in fp32, as LlamaRMSNorm, of
    h = x, or with RESIDUAL of h = fp16(x + r) (the eager residual add), which is written to sum_ptr too."""
    token = tl.program_id(0)
    b, t = token // n_tokens, token % n_tokens
    cols = tl.arange(0, BLOCK)
    ok = cols < width
    x = tl.load(x_ptr + b * sx_b + t * sx_t + cols, mask=ok, other=0.0).to(tl.float32)
    if RESIDUAL:
        x = _half(x + tl.load(r_ptr + token * width + cols, mask=ok, other=0.0).to(tl.float32), OPAQUE)
        tl.store(sum_ptr + token * width + cols, x.to(tl.float16), mask=ok)
    variance = tl.sum(x * x, axis=0) / width
    normed = _half(x * tl.math.rsqrt(variance + eps), OPAQUE)
    weight = tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + token * width + cols, (weight * normed).to(tl.float16), mask=ok)


def _norm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float) -> tuple:
    batch, n_tokens, width = x.shape
    if weight.shape != (width,) or not weight.dtype == x.dtype == torch.float16 or x.stride(-1) != 1:
        raise ValueError(f"weight {tuple(weight.shape)} {weight.dtype} does not fit x {tuple(x.shape)} {x.dtype}")
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype
                                 or not residual.is_contiguous()):
        raise ValueError(f"residual {tuple(residual.shape)} {residual.dtype} does not fit x {tuple(x.shape)}")
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    total = out if residual is None else torch.empty_like(out)
    block = triton.next_power_of_2(width)
    _rms_norm_kernel[(batch * n_tokens,)](x, residual, weight, out, total, n_tokens, width, eps, *x.stride()[:2],
                                          BLOCK=block, RESIDUAL=residual is not None, OPAQUE=OPAQUE_ROUNDING,
                                          num_warps=8 if block >= 4096 else 4)
    return total, out


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm of fp16 x [B, T, D] (rows may be a view) with an fp16 weight, in one kernel instead of six;
    equal to the eager module up to the fp32 summation order of the mean square."""
    return _norm(x, None, weight, eps)[1]


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple:
    """(h, norm(h)) for h = x + residual (fp16, [B, T, D], residual contiguous): the eager residual add and the
    next LlamaRMSNorm in one kernel (h bit-equal; the norm as `rms_norm`)."""
    return _norm(x, residual, weight, eps)


@triton.jit
def rotary(row, dims, cos, sin, ok, HEAD_DIM: tl.constexpr, OPAQUE: tl.constexpr):
    """fp16(fp16(x * cos) + fp16(rotate_half(x) * sin)) (as fp32) of the fp16 vectors x at row + dims (dims
    0..HEAD_DIM-1 along the last axis), as the eager expression rounds it; fp32 cos / sin holding fp16 values."""
    half = HEAD_DIM // 2
    x = tl.load(row + dims, mask=ok, other=0.0).to(tl.float32)
    partner = tl.load(row + (dims + half) % HEAD_DIM, mask=ok, other=0.0).to(tl.float32)
    rotated = tl.where(dims < half, -partner, partner)
    return _half(_half(x * cos, OPAQUE) + _half(rotated * sin, OPAQUE), OPAQUE)


@triton.jit
def _rope_kernel(x_ptr, cos_ptr, sin_ptr, out_ptr, n_tokens, n_heads, sx_b, sx_t, sx_h, sc_b, sc_t,
                 HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, OPAQUE: tl.constexpr):
    """One token: RoPE of every head, as the eager expression."""
    token = tl.program_id(0)
    b, t = token // n_tokens, token % n_tokens
    heads = tl.arange(0, HEADS)[:, None]
    dims = tl.arange(0, HEAD_DIM)[None, :]
    cos = tl.load(cos_ptr + b * sc_b + t * sc_t + dims).to(tl.float32)
    sin = tl.load(sin_ptr + b * sc_b + t * sc_t + dims).to(tl.float32)
    out = rotary(x_ptr + b * sx_b + t * sx_t + heads * sx_h, dims, cos, sin, heads < n_heads, HEAD_DIM, OPAQUE)
    tl.store(out_ptr + token * n_heads * HEAD_DIM + heads * HEAD_DIM + dims, out.to(tl.float16), mask=heads < n_heads)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on fp16 x [B, T, H, d] with fp16 cos / sin [B, T, d]: bit-equal to
    `x * cos[..., None, :] + rotate_half(x) * sin[..., None, :]`, in one kernel instead of five."""
    batch, n_tokens, n_heads, head_dim = x.shape
    contiguous_rows = cos.stride(-1) == x.stride(-1) == 1 and sin.stride() == cos.stride()
    if cos.shape != (batch, n_tokens, head_dim) or not contiguous_rows:
        raise ValueError(f"cos/sin {tuple(cos.shape)} do not match x {tuple(x.shape)}")
    if not x.dtype == cos.dtype == sin.dtype == torch.float16:
        raise ValueError(f"the Triton kernels take fp16, got x / cos / sin in {x.dtype} / {cos.dtype} / {sin.dtype}")
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _rope_kernel[(batch * n_tokens,)](x, cos, sin, out, n_tokens, n_heads, *x.stride()[:3], *cos.stride()[:2],
                                      HEADS=triton.next_power_of_2(n_heads), HEAD_DIM=head_dim,
                                      OPAQUE=OPAQUE_ROUNDING)
    return out


def require_head_dim(head_dim: int, what: str) -> None:
    """`tl.dot` over head dims needs a power of two >= 16."""
    if head_dim < 16 or head_dim & (head_dim - 1):
        raise ValueError(f"{what} needs a power-of-two head_dim >= 16, got {head_dim}")


def visual_attention_parts(q: torch.Tensor, k: torch.Tensor, first: int) -> torch.Tensor:
    """Partial sums [B, P, N] of VisionDrop's score for post-RoPE visual queries q [B, N, H, d] sitting at sequence
    indices first..first+N-1 and keys k [B, T, H, d] (T >= first + N; keys past first + N are never seen): the
    score is `fp16(parts.sum(dim=1) / N)` (`visual_attention_scores`)."""
    batch, n_queries, n_heads, head_dim = q.shape
    if k.shape[-3] < first + n_queries or k.shape[-2] != n_heads or k.stride(-1) != 1 or q.stride(-1) != 1:
        raise ValueError(f"keys {tuple(k.shape)} do not cover queries {tuple(q.shape)} at {first}")
    if q.dtype != torch.float16 or k.dtype != q.dtype:
        raise ValueError(f"the Triton kernels take fp16, got q/k in {q.dtype} / {k.dtype}")
    require_head_dim(head_dim, "the Triton score")
    inv_sqrt_d = float(np.float32(1.0) / np.float32(math.sqrt(head_dim)))  # the fp32 reciprocal torch's div uses
    stats = torch.empty(2, batch * n_heads, n_queries, dtype=torch.float32, device=q.device)
    block_queries, block_keys = block_sizes(n_queries)
    query_blocks = triton.cdiv(n_queries, block_queries)
    strides = (*q.stride()[:3], *k.stride()[:3])
    meta = dict(HEAD_DIM=head_dim, BLOCK_M=block_queries, BLOCK_N=block_keys, OPAQUE=OPAQUE_ROUNDING,
                num_warps=NUM_WARPS, num_stages=NUM_STAGES)
    _row_stats_kernel[(query_blocks, batch * n_heads)](
        q, k, stats[0], stats[1], n_queries, first, n_heads, inv_sqrt_d, *strides, **meta)
    parts = torch.empty(batch, query_blocks, n_queries, dtype=torch.float32, device=q.device)
    _column_sums_kernel[(triton.cdiv(n_queries, block_keys), query_blocks, batch)](
        q, k, stats[0], stats[1], parts, n_queries, first, n_heads, inv_sqrt_d, *strides,
        **{**meta, "num_stages": COLUMN_NUM_STAGES})
    return parts


def visual_attention_scores(q: torch.Tensor, k: torch.Tensor, first: int) -> torch.Tensor:
    """VisionDrop scores [B, N] (see `visual_attention_parts`): the same values as
    `scoring.attention_to_columns(q, k, first + arange(N), slice(first, first + N))`."""
    return (visual_attention_parts(q, k, first).sum(dim=1) / q.shape[1]).to(q.dtype)
