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
        """Apply it to per-token ids [..., n] (positions, origins): merged tokens take their target's id. Ids with
        leading axes the reduction lacks (M-RoPE positions [3, n] or [3, B, n]) are gathered alike on each."""
        index = self.keep if self.merged_index is None else torch.cat([self.keep, self.merged_index], dim=-1)
        lead = segment_ids.shape[:segment_ids.dim() - index.dim()]
        return torch.take_along_dim(segment_ids, index.expand(*lead, *index.shape), dim=-1)

    def split(self) -> list[Reduction]:
        """A batched reduction as one Reduction per row."""
        merged = [None] * len(self.keep) if self.merged is None else self.merged.unbind(0)
        index = [None] * len(self.keep) if self.merged_index is None else self.merged_index.unbind(0)
        return [Reduction(k, m, i) for k, m, i in zip(self.keep.unbind(0), merged, index)]


@dataclass
class Reductions:
    """A stage's result for a whole batch: one batched Reduction (`shared`, leading batch dim) when every row has
    the same visual span and budget, else one Reduction per row (`rows`; None = the row is left unchanged)."""

    shared: Reduction | None = None
    rows: list[Reduction | None] | None = None

    def __post_init__(self):
        if (self.shared is None) == (self.rows is None):
            raise ValueError("Reductions holds either one shared batched Reduction or one Reduction per row")

    def per_row(self) -> list[Reduction | None]:
        return self.shared.split() if self.shared is not None else list(self.rows)


@dataclass
class UnitTokens:
    """The tokens leaving the vision tower for every unit at once (after an encoder stage, if any): features
    [n, T', C], the tower token each stands for [n, T'] (CLS = -1), and how many leading tokens per unit are
    dominant (kept, not merged; the NeXT multi-crop layout places them by position; all of them without merging)."""

    features: torch.Tensor
    origin: torch.Tensor
    dominant: int
