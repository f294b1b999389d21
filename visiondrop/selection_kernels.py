"""Triton kernels for what follows the score in a VisionDrop stage: dominant selection and contextual merging in
five launches instead of ~40 small torch kernels (which, even replayed from a CUDA graph, cost more GPU time at
batch 1 than the score itself at a few hundred tokens). The LLM stages feed them the score kernel's partial sums
(`kernels.visual_attention_parts`), the encoder stage its CLS attention.

1. `_select_kernel` (one program per row): finishes the score from the column kernel's partial sums, finds the
   d-th largest score by a search over the fp16 patterns, two bits per step (non-negative fp16 values order as
   integers), and writes the dominant indices, the stride targets and the other remaining tokens, each in
   ascending order. Ties at the threshold go to the lowest indices (as CUDA's top-k, which a GPU test checks).
2. `_unit_keys_kernel` (one program per token): the L2-normalised head mean of its post-RoPE key.
3. `_assign_kernel`: every remaining non-target token joins the target whose unit key is most similar (fp16
   dot products, ties to the first target), written to a per-token group list (-1: not merged).
4. `_group_sums_kernel`: group sums as a one-hot product over the segment's rows (contiguous loads, built on the
   fly from the group list), the rows shared by a few programs; `_merge_kernel` adds them up and applies the
   fusion rule.

Rounding points follow the torch path (`merging.contextual_merge`, `_select_and_merge`): every torch op on fp16
tensors rounds its fp32 result once, and so does the matching step here, so the two agree up to the order of fp32
sums. The torch path stays the reference (tests compare the two); these run for fp16 on CUDA (`fused_applies`).
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from visiondrop.kernels import OPAQUE_ROUNDING, _half, require_head_dim

MAX_SELECT_TOKENS = 16384  # one program holds a row's scores: longer visual segments take the torch path


def _fp32_reciprocal(n: int) -> float:
    return float(np.float32(1.0) / np.float32(n))


@triton.jit
def _select_kernel(parts_ptr, dom_ptr, target_ptr, rest_ptr, group_ptr, n, n_parts, n_dominant, n_targets, step, inv_n,
                   n_float, VISIBLE: tl.constexpr, BLOCK: tl.constexpr, PARTS: tl.constexpr, OPAQUE: tl.constexpr):
    """Score_j = fp16(sum of partial sums * inv_n) (VISIBLE: times fp16(n * fp32(1 / (n - j)))); dominant = the
    n_dominant highest; the remaining tokens at slots 0, step, ... are the n_targets targets, the others go to
    rest_ptr. All three lists ascending; dominant and target tokens get group -1."""
    b = tl.program_id(0)
    index = tl.arange(0, BLOCK)
    ok = index < n
    total = tl.zeros([BLOCK], tl.float32)
    for first_part in range(0, n_parts, PARTS):
        part = first_part + tl.arange(0, PARTS)[:, None]
        total += tl.sum(tl.load(parts_ptr + (b * n_parts + part) * n + index[None, :],
                                mask=(part < n_parts) & ok[None, :], other=0.0), axis=0)
    score = _half(total * inv_n, OPAQUE)
    if VISIBLE:
        seen_by = tl.where(ok, n - index, 1).to(tl.float32)
        score = _half(score * _half(tl.math.div_rn(tl.full([BLOCK], 1.0, tl.float32), seen_by) * n_float, OPAQUE),
                      OPAQUE)
    bits = tl.where(ok, score.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32), -1)
    threshold = tl.zeros([4], tl.int32)  # the largest pattern with at least n_dominant scores at or above it
    for i in tl.static_range(8):  # bits 15-14, 13-12, ..., 1-0
        trials = tl.max(threshold, axis=0) | (tl.arange(0, 4) << (14 - 2 * i))
        counts = tl.sum((bits[:, None] >= trials[None, :]).to(tl.int32), axis=0)
        threshold = tl.where(counts >= n_dominant, trials, 0)
    threshold = tl.max(threshold, axis=0)
    above = bits > threshold
    tie = (bits == threshold).to(tl.int32)
    ties_taken = n_dominant - tl.sum(above.to(tl.int32), axis=0)
    chosen = (above | ((tie == 1) & (tl.cumsum(tie, axis=0) - tie < ties_taken))).to(tl.int32)
    dom_slot = tl.cumsum(chosen, axis=0) - chosen
    tl.store(dom_ptr + b * n_dominant + dom_slot, index.to(tl.int64), mask=chosen == 1)
    rest = (ok & (chosen == 0)).to(tl.int32)
    slot = index - dom_slot  # position in the remaining list
    group = slot // step
    is_target = (rest == 1) & (slot % step == 0) & (group < n_targets)
    tl.store(target_ptr + b * n_targets + group, index.to(tl.int64), mask=is_target)
    targets_before = tl.minimum((slot + step - 1) // step, n_targets)
    n_rest = n - n_dominant - n_targets
    tl.store(rest_ptr + b * n_rest + slot - targets_before, index.to(tl.int64), mask=(rest == 1) & (is_target == 0))
    tl.store(group_ptr + b * n + index, tl.full([BLOCK], -1, tl.int32), mask=(chosen == 1) | is_target)


@triton.jit
def _unit_keys_kernel(k_ptr, out_ptr, n, n_heads, inv_heads, sk_b, sk_t, sk_h,
                      HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, OPAQUE: tl.constexpr):
    """One token: F.normalize(fp16 mean over heads of its key) in fp16, as the torch ops round."""
    token = tl.program_id(0)
    b, t = token // n, token % n
    heads = tl.arange(0, HEADS)[:, None]
    dims = tl.arange(0, HEAD_DIM)
    key = tl.load(k_ptr + b * sk_b + t * sk_t + heads * sk_h + dims[None, :], mask=heads < n_heads, other=0.0)
    mean = _half(tl.sum(key.to(tl.float32), axis=0) * inv_heads, OPAQUE)
    norm = _half(tl.sqrt_rn(tl.sum(mean * mean, axis=0)), OPAQUE)
    tl.store(out_ptr + token * HEAD_DIM + dims, tl.math.div_rn(mean, norm).to(tl.float16))


@triton.jit
def _assign_kernel(unit_ptr, target_ptr, rest_ptr, group_ptr, n, n_rest, n_targets,
                   HEAD_DIM: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, OPAQUE: tl.constexpr):
    """For a block of remaining non-target tokens of one row: the index of the most similar target."""
    block, b = tl.program_id(0), tl.program_id(1)
    r = block * BLOCK_R + tl.arange(0, BLOCK_R)
    r_ok = r < n_rest
    t = tl.arange(0, BLOCK_C)
    t_ok = t < n_targets
    dims = tl.arange(0, HEAD_DIM)[None, :]
    rows = tl.load(rest_ptr + b * n_rest + r, mask=r_ok, other=0)
    target_rows = tl.load(target_ptr + b * n_targets + t, mask=t_ok, other=0)
    unit = tl.load(unit_ptr + (b * n + rows[:, None]) * HEAD_DIM + dims, mask=r_ok[:, None], other=0.0)
    target_unit = tl.load(unit_ptr + (b * n + target_rows[:, None]) * HEAD_DIM + dims, mask=t_ok[:, None], other=0.0)
    similarity = tl.where(t_ok[None, :], _half(tl.dot(unit, tl.trans(target_unit)), OPAQUE), float("-inf"))
    tl.store(group_ptr + b * n + rows, tl.argmax(similarity, axis=1).to(tl.int32), mask=r_ok)


@triton.jit
def _group_sums_kernel(x_ptr, group_ptr, sums_ptr, sizes_ptr, n, rows_per_split, width, sx_b, sx_t,
                       BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr):
    """fp32 sums and sizes of every group over one split of a row's tokens, for a block of columns (a one-hot
    product built from the group list; tokens of group -1 join none)."""
    block, split, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    cols = block * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < width
    t = tl.arange(0, BLOCK_C)
    sums = tl.zeros([BLOCK_C, BLOCK_D], tl.float32)
    members = tl.zeros([BLOCK_C, BLOCK_R], tl.float32)
    for start in range(split * rows_per_split, tl.minimum(split * rows_per_split + rows_per_split, n), BLOCK_R):
        r = start + tl.arange(0, BLOCK_R)
        r_ok = r < n
        group = tl.load(group_ptr + b * n + r, mask=r_ok, other=-1)
        x = tl.load(x_ptr + b * sx_b + r[:, None] * sx_t + cols[None, :], mask=r_ok[:, None] & col_ok[None, :],
                    other=0.0)
        member = (t[:, None] == group[None, :]).to(tl.float16)
        sums += tl.dot(member, x)
        members += member.to(tl.float32)
    part = b * tl.num_programs(1) + split
    tl.store(sums_ptr + (part * BLOCK_C + t[:, None]) * width + cols[None, :], sums, mask=col_ok[None, :])
    if block == 0:
        tl.store(sizes_ptr + part * BLOCK_C + t, tl.sum(members, axis=1))


@triton.jit
def _merge_kernel(x_ptr, target_ptr, sums_ptr, sizes_ptr, out_ptr, n_splits, n_targets, width, sx_b, sx_t,
                  SIZE_WEIGHTED: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, OPAQUE: tl.constexpr):
    """A block of columns of every merged token of one row: the splits' sums and sizes added in order and rounded
    to fp16 (as the one-hot matmul's output), then target + sums / max(size, 1), or (target + sums) / (1 + size)
    when SIZE_WEIGHTED."""
    block, b = tl.program_id(0), tl.program_id(1)
    cols = block * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < width
    t = tl.arange(0, BLOCK_C)
    t_ok = t < n_targets
    sums = tl.zeros([BLOCK_C, BLOCK_D], tl.float32)
    sizes = tl.zeros([BLOCK_C], tl.float32)
    for split in range(n_splits):
        part = b * n_splits + split
        sums += tl.load(sums_ptr + (part * BLOCK_C + t[:, None]) * width + cols[None, :], mask=col_ok[None, :],
                        other=0.0)
        sizes += tl.load(sizes_ptr + part * BLOCK_C + t)
    target_rows = tl.load(target_ptr + b * n_targets + t, mask=t_ok, other=0)
    out_ok = t_ok[:, None] & col_ok[None, :]
    target = tl.load(x_ptr + b * sx_b + target_rows[:, None] * sx_t + cols[None, :], mask=out_ok, other=0.0)
    target = target.to(tl.float32)
    sums, sizes = _half(sums, OPAQUE), _half(sizes, OPAQUE)
    if SIZE_WEIGHTED:
        merged = tl.math.div_rn(_half(target + sums, OPAQUE), _half(1.0 + sizes, OPAQUE)[:, None])
    else:
        merged = target + _half(tl.math.div_rn(sums, tl.maximum(sizes, 1.0)[:, None]), OPAQUE)
    tl.store(out_ptr + (b * n_targets + t[:, None]) * width + cols[None, :], merged.to(tl.float16), mask=out_ok)


def merge_splits(n: int) -> int:
    """Programs sharing a row's tokens in the group sums: one per 1536 tokens. (H200, 2880 tokens: the best of a
    sweep over 1-12 splits, 32/64-row and 32/64-column tiles, 4/8 warps was 2 splits of 64 x 64 tiles with 8 warps,
    17.7 us for both kernels; 1 split of 32 x 32 tiles took 26.0 us.)"""
    return -(-n // 1536)


def select_and_merge(parts: torch.Tensor, segment: torch.Tensor, keys: torch.Tensor, n_dominant: int, n_targets: int,
                     fusion: str = "target_plus_mean", visible: bool = False,
                     divisor: int | None = None) -> tuple[torch.Tensor, ...]:
    """Dominant selection and contextual merging of a segment [B, N, D] from partial sums of its scores `parts`
    [B, P, N] (score = fp16(sum over P / `divisor`), by default the N visual queries of
    `kernels.visual_attention_parts`) and its keys [B, N, H, d] (merging compares their head means). Returns
    (dominant indices [B, d], merged tokens [B, c, D], target indices [B, c]), as the torch path
    (`VisionDrop._select_and_merge` with `_rescale`; `visible`: the VD-2 divisor)."""
    batch, n_parts, n = parts.shape
    if not segment.dtype == keys.dtype == torch.float16 or segment.stride(-1) != 1 or keys.stride(-1) != 1:
        raise ValueError(f"fp16 segment / keys with contiguous rows expected, got {segment.dtype} / {keys.dtype}")
    if n > MAX_SELECT_TOKENS or n_dominant + n_targets > n or not segment.shape[:2] == keys.shape[:2] == (batch, n):
        raise ValueError(f"cannot keep {n_dominant} + {n_targets} of {n} tokens (segment {tuple(segment.shape)}, "
                         f"keys {tuple(keys.shape)}, at most {MAX_SELECT_TOKENS} tokens)")
    require_head_dim(keys.shape[-1], "the Triton merging")
    n_rest = n - n_dominant - n_targets
    step = max(1, (n - n_dominant) // n_targets) if n_targets else 1
    device, width = parts.device, segment.shape[-1]
    dom = torch.empty(batch, n_dominant, dtype=torch.long, device=device)
    targets = torch.empty(batch, n_targets, dtype=torch.long, device=device)
    rest = torch.empty(batch, n_rest, dtype=torch.long, device=device)
    group = torch.empty(batch, n, dtype=torch.int32, device=device)
    block = triton.next_power_of_2(n)
    _select_kernel[(batch,)](parts, dom, targets, rest, group, n, n_parts, n_dominant, n_targets, step,
                             _fp32_reciprocal(divisor or n), float(n), VISIBLE=visible, BLOCK=block, PARTS=4,
                             OPAQUE=OPAQUE_ROUNDING, num_warps=8 if block >= 2048 else 4)
    merged = segment.new_empty(batch, n_targets, width)
    if n_targets == 0:
        return dom, merged, targets
    block_c = max(16, triton.next_power_of_2(n_targets))
    if n_rest:
        heads, head_dim = keys.shape[2:]
        unit = torch.empty(batch, n, head_dim, dtype=keys.dtype, device=device)
        _unit_keys_kernel[(batch * n,)](keys, unit, n, heads, _fp32_reciprocal(heads), *keys.stride()[:3],
                                        HEADS=triton.next_power_of_2(heads), HEAD_DIM=head_dim, OPAQUE=OPAQUE_ROUNDING,
                                        num_warps=1)
        _assign_kernel[(triton.cdiv(n_rest, 16), batch)](unit, targets, rest, group, n, n_rest, n_targets,
                                                          HEAD_DIM=head_dim, BLOCK_R=16, BLOCK_C=block_c,
                                                          OPAQUE=OPAQUE_ROUNDING)
    splits = merge_splits(n)
    rows_per_split = triton.cdiv(triton.cdiv(n, splits), 64) * 64
    sums = torch.empty(batch, splits, block_c, width, dtype=torch.float32, device=device)
    sizes = torch.empty(batch, splits, block_c, dtype=torch.float32, device=device)
    block_d = max(16, min(64 if n >= 1024 else 32, 8192 // block_c))  # wider column blocks pay off on long rows
    _group_sums_kernel[(triton.cdiv(width, block_d), splits, batch)](
        segment, group, sums, sizes, n, rows_per_split, width, *segment.stride()[:2], BLOCK_R=64, BLOCK_C=block_c,
        BLOCK_D=block_d, num_warps=8)
    _merge_kernel[(triton.cdiv(width, block_d), batch)](
        segment, targets, sums, sizes, merged, splits, n_targets, width, *segment.stride()[:2],
        SIZE_WEIGHTED=fusion == "size_weighted", BLOCK_C=block_c, BLOCK_D=block_d, OPAQUE=OPAQUE_ROUNDING,
        num_warps=8)
    return dom, merged, targets
