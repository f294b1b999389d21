"""The padded multimodal batch that flows through the decoder loop, and its attention masks."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


@dataclass
class SequenceBatch:
    """A right-padded batch of embedded sequences with per-sample visual spans.

    `key_mask[b, t]` is True for real tokens; real tokens of row b are its first `lengths[b]` columns.
    The per-sample integers (`lengths`, `visual_start`, `visual_len`, `visual_units`) live on the host, so the
    loop and the methods read them without waiting for the device.
    `visual_start[b]` / `visual_len[b]` locate the (single, contiguous) visual segment of sample b
    (`visual_len` is 0 for text-only samples). `origin[b]` holds, for every visual token, the index of the
    vision-tower token it stands for (-1 for a CLS token), so kept tokens can be drawn over the image; for an
    anyres image patch j of sub-image u is u * P + j and an `image_newline` token is -2 (llava.model.anyres).
    `visual_units[b]` is the number of tower sub-images behind the segment (1 per LLaVA-1.5 image or video
    frame, 1 + crops per NeXT image, 0 for text-only samples; None = 1 per image-bearing sample), so methods
    can scale per-sub-image budgets.
    `layer_input` is set at a boundary only for methods that score with the previous layer's own attention
    (`score_layer_offset = -1`): the hidden states that entered that layer.
    """

    hidden: torch.Tensor
    key_mask: torch.Tensor
    positions: torch.Tensor
    visual_start: torch.Tensor
    visual_len: torch.Tensor
    origin: list[torch.Tensor] = field(default_factory=list)
    layer_input: torch.Tensor | None = None
    visual_units: torch.Tensor | None = None
    lengths: torch.Tensor | None = None

    def __post_init__(self):
        if self.lengths is None:
            self.lengths = self.key_mask.sum(dim=1).cpu()
        self.visual_start, self.visual_len = self.visual_start.cpu(), self.visual_len.cpu()
        if self.visual_units is not None:
            self.visual_units = self.visual_units.cpu()

    @property
    def units(self) -> torch.Tensor:
        """Sub-images per sample (`visual_units`, defaulting to 1 per sample with a visual segment)."""
        if self.visual_units is not None:
            return self.visual_units
        return (self.visual_len > 0).long()

    @property
    def has_padding(self) -> bool:
        return bool((self.lengths < self.key_mask.shape[1]).any())

    def with_hidden(self, hidden: torch.Tensor) -> SequenceBatch:
        return replace(self, hidden=hidden)

    def next_position(self) -> torch.Tensor:
        """[B]: the position a token after each row's last real one takes (one past the largest real position;
        `positions` is [B, T], or [A, B, T] with one row per rotary axis as Qwen2.5-VL's M-RoPE)."""
        positions = self.positions.masked_fill(~self.key_mask, -1)
        if positions.dim() == 3:
            positions = positions.max(dim=0).values
        return positions.max(dim=-1).values + 1

    def append(self, embeds: torch.Tensor) -> SequenceBatch:
        """The batch with one more real token per row (embeds [B, 1, D]) placed after each row's last one."""
        rows = torch.arange(self.hidden.shape[0], device=self.hidden.device)
        at = self.lengths.to(self.hidden.device)
        hidden = torch.cat([self.hidden, torch.zeros_like(self.hidden[:, :1])], dim=1)
        hidden[rows, at] = embeds[:, 0].to(hidden.dtype)
        key_mask = torch.cat([self.key_mask, torch.zeros_like(self.key_mask[:, :1])], dim=1)
        key_mask[rows, at] = True
        positions = torch.cat([self.positions, torch.zeros_like(self.positions[..., :1])], dim=-1)
        positions[..., rows, at] = self.next_position()
        return replace(self, hidden=hidden, key_mask=key_mask, positions=positions, lengths=self.lengths + 1)


def attention_bias(
    key_mask: torch.Tensor, padded: bool, q_len: int, dtype: torch.dtype, implementation: str
) -> torch.Tensor | None:
    """Mask for one attention call whose `q_len` queries are the last `q_len` keys.

    `padded` says whether `key_mask` has any False (known on the host, so no device sync here).
    Returns None where the attention kernel's own causal handling is exact (no padding, and a kernel that
    applies causality itself), a 2-D key mask for FlashAttention-2, else an additive [B, 1, q, k] mask.
    """
    if implementation == "flash_attention_2":
        return key_mask.long() if padded else None
    if not padded and (q_len == 1 or implementation != "eager"):
        return None
    k_len = key_mask.shape[1]
    causal = torch.ones(q_len, k_len, dtype=torch.bool, device=key_mask.device).tril(k_len - q_len)
    allowed = causal[None] & key_mask[:, None, :].bool()
    bias = torch.zeros(allowed.shape, dtype=dtype, device=key_mask.device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def pad_rows(rows: list[torch.Tensor], pad_value: float | int = 0) -> torch.Tensor:
    """Stack variable-length rows (first dim = time) into a right-padded batch."""
    longest = max(r.shape[0] for r in rows)
    out = rows[0].new_full((len(rows), longest, *rows[0].shape[1:]), pad_value)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out
