"""Triton kernels for VisionDrop's visual-to-visual score with the reference rounding points (methods spec §1.3).

S_j = (1/N) sum_i fp16(mean_h fp16(softmax_fp32(fp16(fp16(q_i.k) / sqrt d) + causal)[j])) for visual queries
i and visual keys j, where the softmax runs over the whole prefix (text before the image and earlier visual
tokens). The reference materialises the [H, N, T] map; here one kernel computes every query row's fp32 max and
sum of exponentials (two sweeps over the keys, as a plain fp32 softmax does) and a second one recomputes the
logits tile by tile and accumulates the head-mean probabilities of each key column. Same rounding points as the
reference, so the scores agree up to the fp32 summation order (at most one fp16 step, rarely); no map is stored.

Runs on CUDA, and on CPU under TRITON_INTERPRET=1 (how the tests exercise it without a GPU).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import triton
import triton.language as tl

BLOCK_QUERIES = 64
BLOCK_KEYS = 64


@triton.jit
def _rounded_logits(q, k, inv_sqrt_d):
    """fp16(fp16(q.k) * (1 / sqrt d)) as fp32: the matmul output and the in-place division each round once."""
    x = tl.dot(q, tl.trans(k)).to(q.dtype).to(tl.float32)
    return (x * inv_sqrt_d).to(q.dtype).to(tl.float32)


@triton.jit
def _row_stats_kernel(q_ptr, k_ptr, max_ptr, sum_ptr, n_queries, first, n_heads, inv_sqrt_d,
                      sq_b, sq_t, sq_h, sk_b, sk_t, sk_h,
                      HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Row max and sum of exp(x - max) over keys 0..first+i, for a block of visual queries of one (row, head)."""
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
    for start in range(0, end, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        k = tl.load(k_base + cols[:, None] * sk_t + dims[None, :], mask=(cols < n_keys)[:, None], other=0.0)
        x = _rounded_logits(q, k, inv_sqrt_d)
        x = tl.where(cols[None, :] <= query_pos[:, None], x, float("-inf"))
        row_max = tl.maximum(row_max, tl.max(x, axis=1))
    row_sum = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, end, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        k = tl.load(k_base + cols[:, None] * sk_t + dims[None, :], mask=(cols < n_keys)[:, None], other=0.0)
        x = _rounded_logits(q, k, inv_sqrt_d)
        visible = cols[None, :] <= query_pos[:, None]
        row_sum += tl.sum(tl.where(visible, tl.exp(x - row_max[:, None]), 0.0), axis=1)
    out = bh * n_queries + rows
    tl.store(max_ptr + out, row_max, mask=row_ok)
    tl.store(sum_ptr + out, row_sum, mask=row_ok)


@triton.jit
def _column_sums_kernel(q_ptr, k_ptr, max_ptr, sum_ptr, part_ptr, n_queries, first, n_heads, inv_sqrt_d,
                        sq_b, sq_t, sq_h, sk_b, sk_t, sk_h,
                        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
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
            x = _rounded_logits(q, k, inv_sqrt_d)
            stats = (b * n_heads + h) * n_queries + rows
            row_max = tl.load(max_ptr + stats, mask=row_ok, other=0.0)
            row_sum = tl.load(sum_ptr + stats, mask=row_ok, other=1.0)
            p = tl.exp(x - row_max[:, None]) / row_sum[:, None]
            head_sum += tl.where(visible, p, 0.0).to(q_ptr.dtype.element_ty).to(tl.float32)
        head_mean = (head_sum / n_heads).to(q_ptr.dtype.element_ty).to(tl.float32)
        tl.store(part_ptr + (b * tl.num_programs(1) + query_block) * n_queries + cols, tl.sum(head_mean, axis=0),
                 mask=col_ok)


def visual_attention_scores(q: torch.Tensor, k: torch.Tensor, first: int) -> torch.Tensor:
    """VisionDrop scores [B, N] for post-RoPE visual queries q [B, N, H, d] sitting at sequence indices
    first..first+N-1 and keys k [B, T, H, d] (T >= first + N; keys past first + N are never seen): the same
    values as `scoring.attention_to_columns(q, k, first + arange(N), slice(first, first + N))`."""
    batch, n_queries, n_heads, head_dim = q.shape
    if k.shape[-3] < first + n_queries or k.shape[-2] != n_heads or k.stride(-1) != 1 or q.stride(-1) != 1:
        raise ValueError(f"keys {tuple(k.shape)} do not cover queries {tuple(q.shape)} at {first}")
    if q.dtype not in (torch.float16, torch.bfloat16) or k.dtype != q.dtype:
        raise ValueError(f"the Triton score takes fp16 or bf16 q/k, got {q.dtype} / {k.dtype}")
    if head_dim < 16 or head_dim & (head_dim - 1):
        raise ValueError(f"the Triton score needs a power-of-two head_dim >= 16, got {head_dim}")
    inv_sqrt_d = float(np.float32(1.0) / np.float32(math.sqrt(head_dim)))  # the fp32 reciprocal torch's div uses
    stats = torch.empty(2, batch * n_heads, n_queries, dtype=torch.float32, device=q.device)
    query_blocks = triton.cdiv(n_queries, BLOCK_QUERIES)
    strides = (*q.stride()[:3], *k.stride()[:3])
    meta = dict(HEAD_DIM=head_dim, BLOCK_M=BLOCK_QUERIES, BLOCK_N=BLOCK_KEYS)
    _row_stats_kernel[(query_blocks, batch * n_heads)](
        q, k, stats[0], stats[1], n_queries, first, n_heads, inv_sqrt_d, *strides, **meta)
    parts = torch.zeros(batch, query_blocks, n_queries, dtype=torch.float32, device=q.device)
    _column_sums_kernel[(triton.cdiv(n_queries, BLOCK_KEYS), query_blocks, batch)](
        q, k, stats[0], stats[1], parts, n_queries, first, n_heads, inv_sqrt_d, *strides, **meta)
    return (parts.sum(dim=1) / n_queries).to(q.dtype)
