"""PyramidDrop: before each layer of `layers`, keep the floor(N0 * ratio^k) visual tokens the last instruction
token attends to most (that layer's q/k + RoPE), in sequence order; compacted positions (docs/methods.md, 'PDrop')."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from visiondrop.merging import top_indices_ascending
from visiondrop.methods.base import Method, SampleView, per_sample, shared_visual_span
from visiondrop.reduction import Reduction
from visiondrop.scoring import last_token_attention


@dataclass
class PDropOptions:
    """`layers`: prune before these decoder layers (official layer_list); `ratio`: lambda, the decay per stage."""

    layers: list[int] = field(default_factory=lambda: [2, 8, 16])
    ratio: float = 0.5

    def __post_init__(self):
        if sorted(set(self.layers)) != list(self.layers) or not self.layers or self.layers[0] < 1:
            raise ValueError(f"layers must be strictly increasing layer numbers >= 1, got {self.layers}")
        if not 0 < self.ratio <= 1:
            raise ValueError(f"ratio={self.ratio}: lambda must be in (0, 1]")


def pdrop_count(n0: int, ratio: float, stage: int) -> int:
    """Visual tokens after stage `stage` (1-based) for a sample entering the LLM with n0: floor(n0 * ratio^stage)."""
    return math.floor(n0 * ratio**stage)


class PDrop(Method):
    name = "pdrop"
    Options = PDropOptions

    def __init__(self, options: PDropOptions):
        super().__init__(options)
        self.boundaries = tuple(options.layers)
        self._n0: torch.Tensor | None = None  # measured visual counts of the current prefill (PD-3)

    def stage_counts(self, n_in: int) -> list[int]:
        return [pdrop_count(n_in, self.options.ratio, k) for k in range(1, len(self.boundaries) + 1)]

    def begin_prefill(self, batch) -> None:
        self._n0 = batch.visual_len.clone()

    def reduce(self, stage: int, layer_idx: int, batch, layer: nn.Module, rope: tuple) -> list[Reduction | None]:
        if self._n0 is None or len(self._n0) != batch.hidden.shape[0]:
            raise RuntimeError("PDrop.reduce before begin_prefill: N0 (the measured entering count) is unknown")
        span = shared_visual_span(batch)
        n_keep = {min(n, pdrop_count(n0, self.options.ratio, stage))
                  for n, n0 in zip(batch.visual_len.tolist(), self._n0.tolist())}
        if span is not None and len(n_keep) == 1:  # the whole batch at once
            scores = last_token_attention(batch.hidden, layer, *rope, span, last=batch.lengths - 1)
            return Reduction(keep=top_indices_ascending(scores, n_keep.pop()))
        return per_sample(batch, rope, lambda s: self._reduce_sample(s, layer, stage))

    def _reduce_sample(self, s: SampleView, layer: nn.Module, stage: int) -> Reduction:
        n_keep = min(s.n_visual, pdrop_count(int(self._n0[s.index]), self.options.ratio, stage))
        scores = last_token_attention(s.hidden, layer, s.cos, s.sin, s.visual)
        return Reduction(keep=top_indices_ascending(scores, n_keep))
