"""Triton kernels of a decoder layer's decode step (one new token per row) over a static KV cache, fp16.

- `decode_attention`: RoPE of the new token's query and key, the write of its key and value into the cache slot,
  and attention of the query over every visible key of the cache (the key mask and the keys up to the slot), in
  one launch. The keys are split into chunks of `CHUNK` over programs (flash-decoding: a batch-1 step has one
  query per head, so one program per head would leave most of the GPU idle); each program keeps its chunk's fp32
  softmax max, sum and weighted value sum, and a second small kernel combines the chunks (one chunk: no second
  kernel). RoPE is rounded as the eager expression (bit-equal), logits, softmax and the value sums in fp32, the
  output rounded once to fp16: SDPA's result up to fp32 summation order.
- `silu_mul`: SiLU(gate) * up with the eager rounding points (SiLU rounded to fp16, then the fp16 product).

The residual add fused with the next RMSNorm is `visiondrop.kernels.add_rms_norm`. Runs on CUDA, and on CPU
under TRITON_INTERPRET=1 (how the tests exercise it).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from visiondrop.kernels import OPAQUE_ROUNDING, _half, rotary

CHUNK = 128  # keys per program: a 7B batch-1 step over ~700 keys runs 32 heads x 6 chunks
BLOCK_KEYS = 64  # keys per loop iteration of a program
SILU_BLOCK = 1024


@triton.jit
def _attention_kernel(q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, keys_ptr, values_ptr, mask_ptr, slot_ptr, out_ptr,
                      part_ptr, n_heads, scale, sq_b, sk_b, sv_b, sc_b, sK_b, sK_h, sK_t, sV_b, sV_h, sV_t, sm_b,
                      HEAD_DIM: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr,
                      OPAQUE: tl.constexpr):
    """One (row, head) and one chunk of keys: RoPE, the cache write (by the chunk holding the slot), then the
    chunk's online softmax; the normalised output (one chunk) or the chunk's (sum, max, weighted sum)."""
    bh, chunk = tl.program_id(0), tl.program_id(1)
    b, h = bh // n_heads, bh % n_heads
    dims = tl.arange(0, HEAD_DIM)
    slot = tl.load(slot_ptr).to(tl.int32)
    cos = tl.load(cos_ptr + b * sc_b + dims).to(tl.float32)
    sin = tl.load(sin_ptr + b * sc_b + dims).to(tl.float32)
    q = rotary(q_ptr + b * sq_b + h * HEAD_DIM, dims, cos, sin, dims < HEAD_DIM, HEAD_DIM, OPAQUE)
    k_new = rotary(k_ptr + b * sk_b + h * HEAD_DIM, dims, cos, sin, dims < HEAD_DIM, HEAD_DIM, OPAQUE)
    v_new = tl.load(v_ptr + b * sv_b + h * HEAD_DIM + dims).to(tl.float32)
    keys = keys_ptr + b * sK_b + h * sK_h
    values = values_ptr + b * sV_b + h * sV_h
    start = chunk * CHUNK
    if (start <= slot) & (slot < start + CHUNK):
        tl.store(keys + slot * sK_t + dims, k_new.to(tl.float16))
        tl.store(values + slot * sV_t + dims, v_new.to(tl.float16))
    end = tl.minimum(start + CHUNK, slot + 1)  # keys after the slot are not written yet
    row_max = tl.full([1], float("-inf"), tl.float32)
    row_sum = tl.zeros([1], tl.float32)
    acc = tl.zeros([HEAD_DIM], tl.float32)
    for first in range(start, end, BLOCK_N):
        cols = first + tl.arange(0, BLOCK_N)
        stored = (cols < end) & (cols != slot)  # the slot's key / value come from registers, not the cache
        visible = (cols < end) & (tl.load(mask_ptr + b * sm_b + cols, mask=cols < end, other=0) != 0)
        at_slot = (cols == slot)[:, None]
        k = tl.load(keys + cols[:, None] * sK_t + dims[None, :], mask=stored[:, None], other=0.0).to(tl.float32)
        k = tl.where(at_slot, k_new[None, :], k)
        x = tl.where(visible, tl.sum(k * q[None, :], axis=1) * scale, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(x, axis=0))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)  # no visible key yet: keep zeros, not NaN
        p = tl.exp(x - shift)
        alpha = tl.exp(row_max - shift)
        v = tl.load(values + cols[:, None] * sV_t + dims[None, :], mask=stored[:, None], other=0.0).to(tl.float32)
        v = tl.where(at_slot, v_new[None, :], v)
        row_sum = row_sum * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        row_max = new_max
    if SPLIT:
        part = part_ptr + (bh * tl.num_programs(1) + chunk) * (HEAD_DIM + 2)
        tl.store(part + dims, acc)
        tl.store(part + HEAD_DIM + tl.arange(0, 1), row_max)
        tl.store(part + HEAD_DIM + 1 + tl.arange(0, 1), row_sum)
    else:
        tl.store(out_ptr + b * n_heads * HEAD_DIM + h * HEAD_DIM + dims, (acc / row_sum).to(tl.float16))


@triton.jit
def _combine_kernel(part_ptr, out_ptr, n_heads, n_chunks, HEAD_DIM: tl.constexpr, CHUNKS: tl.constexpr):
    """One (row, head): the softmax-weighted mean of its chunks' partial results (the slot's chunk sees a key)."""
    bh = tl.program_id(0)
    b, h = bh // n_heads, bh % n_heads
    chunks = tl.arange(0, CHUNKS)
    dims = tl.arange(0, HEAD_DIM)
    ok = chunks < n_chunks
    part = part_ptr + (bh * n_chunks + chunks) * (HEAD_DIM + 2)
    chunk_max = tl.load(part + HEAD_DIM, mask=ok, other=float("-inf"))
    chunk_sum = tl.load(part + HEAD_DIM + 1, mask=ok, other=0.0)
    acc = tl.load(part[:, None] + dims[None, :], mask=ok[:, None], other=0.0)
    weight = tl.exp(chunk_max - tl.max(chunk_max, axis=0))
    out = tl.sum(weight[:, None] * acc, axis=0) / tl.sum(weight * chunk_sum, axis=0)
    tl.store(out_ptr + b * n_heads * HEAD_DIM + h * HEAD_DIM + dims, out.to(tl.float16))


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     keys: torch.Tensor, values: torch.Tensor, key_mask: torch.Tensor, slot: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """Attention output [B, 1, H * d] (fp16) of one decode step: q, k, v [B, 1, H * d] the token's projections
    (before RoPE), cos / sin [B, 1, d], keys / values [B, H, C, d] the layer's static cache, key_mask [B, C]
    (bool) the keys every row may see (the slot's included), slot [1] (a device index) where this token's key
    and value go. Writes the token's rotated key and its value at the slot and attends, with softmax scale
    `scale`, to the keys in key_mask at or before the slot: RoPE, two index_copy_ and SDPA with the key mask."""
    batch, n_tokens, width = q.shape
    _, n_heads, capacity, head_dim = keys.shape
    if n_tokens != 1 or k.shape != q.shape or v.shape != q.shape or width != n_heads * head_dim:
        raise ValueError(f"q / k / v {tuple(q.shape)} / {tuple(k.shape)} / {tuple(v.shape)} are not one token "
                         f"of {n_heads} heads x {head_dim}")
    if values.shape != keys.shape or key_mask.shape != (batch, capacity) or cos.shape != (batch, 1, head_dim):
        raise ValueError(f"cache {tuple(keys.shape)}, key mask {tuple(key_mask.shape)} and cos "
                         f"{tuple(cos.shape)} do not match q {tuple(q.shape)}")
    if head_dim & (head_dim - 1) or any(t.stride(-1) != 1 for t in (q, k, v, cos, sin, keys, values, key_mask)):
        raise ValueError(f"needs a power-of-two head_dim (got {head_dim}) and rows contiguous in the last dim")
    if not all(t.dtype == torch.float16 for t in (q, k, v, cos, sin, keys, values)) or key_mask.dtype != torch.bool:
        raise ValueError("the Triton kernels take fp16 tensors and a bool key mask")
    n_chunks = triton.cdiv(capacity, CHUNK)
    out = torch.empty(batch, 1, width, dtype=q.dtype, device=q.device)
    part = torch.empty(batch * n_heads, n_chunks, head_dim + 2, dtype=torch.float32, device=q.device)
    _attention_kernel[(batch * n_heads, n_chunks)](
        q, k, v, cos, sin, keys, values, key_mask, slot, out, part, n_heads, scale, q.stride(0), k.stride(0),
        v.stride(0), cos.stride(0), *keys.stride()[:3], *values.stride()[:3], key_mask.stride(0),
        HEAD_DIM=head_dim, CHUNK=CHUNK, BLOCK_N=min(BLOCK_KEYS, CHUNK), SPLIT=n_chunks > 1, OPAQUE=OPAQUE_ROUNDING)
    if n_chunks > 1:
        _combine_kernel[(batch * n_heads,)](part, out, n_heads, n_chunks, HEAD_DIM=head_dim,
                                            CHUNKS=triton.next_power_of_2(n_chunks))
    return out


@triton.jit
def _silu_mul_kernel(gate_ptr, up_ptr, out_ptr, n, BLOCK: tl.constexpr, OPAQUE: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < n
    gate = tl.load(gate_ptr + i, mask=ok, other=0.0).to(tl.float32)
    up = tl.load(up_ptr + i, mask=ok, other=0.0).to(tl.float32)
    silu = _half(gate / (1.0 + tl.exp(-gate)), OPAQUE)
    tl.store(out_ptr + i, (silu * up).to(tl.float16), mask=ok)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """`F.silu(gate) * up` for contiguous fp16 tensors of one shape, in one kernel instead of two."""
    if gate.shape != up.shape or not gate.dtype == up.dtype == torch.float16 or not (
            gate.is_contiguous() and up.is_contiguous()):
        raise ValueError(f"gate {tuple(gate.shape)} {gate.dtype} and up {tuple(up.shape)} {up.dtype}: "
                         "contiguous fp16 tensors of one shape")
    out = torch.empty_like(gate)
    _silu_mul_kernel[(triton.cdiv(gate.numel(), SILU_BLOCK),)](gate, up, out, gate.numel(), BLOCK=SILU_BLOCK,
                                                             OPAQUE=OPAQUE_ROUNDING)
    return out
