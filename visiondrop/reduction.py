"""What a pruning stage returns for one sample, and how the decoder loop applies it."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Reduction:
    """The new visual segment of one sample: kept tokens (in output order), then merged tokens.

    `keep` indexes the current visual segment. `merged` holds already-fused hidden states placed right after
    the kept tokens; `merged_index[i]` is the segment index of the token merged row i stands for (its target),
    used for accounting and drawing.
    """

    keep: torch.Tensor
    merged: torch.Tensor | None = None
    merged_index: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.keep.numel()) + (0 if self.merged is None else int(self.merged.shape[0]))

    def gather(self, segment: torch.Tensor) -> torch.Tensor:
        """Apply this reduction to a [n, D] visual segment."""
        kept = segment[self.keep]
        return kept if self.merged is None else torch.cat([kept, self.merged.to(kept.dtype)], dim=0)

    def gather_index(self, segment_ids: torch.Tensor) -> torch.Tensor:
        """Apply it to a per-token id vector (positions, origins): merged tokens take their target's id."""
        kept = segment_ids[self.keep]
        return kept if self.merged_index is None else torch.cat([kept, segment_ids[self.merged_index]])
