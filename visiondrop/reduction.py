"""What a pruning stage returns for one sample, and how the decoder loop applies it."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Reduction:
    """The new visual segment of one sample (or of every row of a batch, with a leading batch dim): kept
    tokens in output order, then merged tokens.

    `keep` indexes the current visual segment. `merged` holds already-fused hidden states placed right after
    the kept tokens; `merged_index[i]` is the segment index of the token merged row i stands for (its target),
    used for accounting and drawing. `drop_after` removes that many text tokens right after the segment (FastV's
    released window; one sample's reduction only, never a batched one).
    """

    keep: torch.Tensor
    merged: torch.Tensor | None = None
    merged_index: torch.Tensor | None = None
    drop_after: int = 0

    @property
    def size(self) -> int:
        merged = 0 if self.merged is None else self.merged.shape[-2]
        return int(self.keep.shape[-1]) + merged

    def gather(self, segment: torch.Tensor) -> torch.Tensor:
        """Apply this reduction to a [..., n, D] visual segment."""
        kept = torch.take_along_dim(segment, self.keep[..., None], dim=-2)
        return kept if self.merged is None else torch.cat([kept, self.merged.to(kept.dtype)], dim=-2)

    def gather_index(self, segment_ids: torch.Tensor) -> torch.Tensor:
        """Apply it to per-token ids [..., n] (positions, origins): merged tokens take their target's id."""
        index = self.keep if self.merged_index is None else torch.cat([self.keep, self.merged_index], dim=-1)
        return torch.take_along_dim(segment_ids, index, dim=-1)

    def split(self) -> list[Reduction]:
        """A batched reduction as one Reduction per row."""
        merged = [None] * len(self.keep) if self.merged is None else self.merged.unbind(0)
        index = [None] * len(self.keep) if self.merged_index is None else self.merged_index.unbind(0)
        return [Reduction(k, m, i) for k, m, i in zip(self.keep.unbind(0), merged, index)]
