"""PyramidDrop: before each layer of `layers`, keep the floor(N0 * ratio^k) visual tokens the last instruction
token attends to most (that layer's q/k + RoPE), in sequence order; compacted positions (docs/methods.md, 'PDrop')."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from visiondrop.methods.base import ScoreThenKeep, check_positions


@dataclass
class PDropOptions:
    """`layers`: prune before these decoder layers (official layer_list); `ratio`: lambda, the decay per stage."""

    layers: list[int] = field(default_factory=lambda: [2, 8, 16])
    ratio: float = 0.5
    positions: str = "compact"  # the release; "original": kept tokens keep their positions (Qwen2.5-VL's M-RoPE)

    def __post_init__(self):
        if sorted(set(self.layers)) != list(self.layers) or not self.layers or self.layers[0] < 1:
            raise ValueError(f"layers must be strictly increasing layer numbers >= 1, got {self.layers}")
        if not 0 < self.ratio <= 1:
            raise ValueError(f"ratio={self.ratio}: lambda must be in (0, 1]")
        check_positions(self.positions, "positions")


def pdrop_count(n0: int, ratio: float, stage: int) -> int:
    """Visual tokens after stage `stage` (1-based) for a sample entering the LLM with n0: floor(n0 * ratio^stage)."""
    return math.floor(n0 * ratio**stage)


class PDrop(ScoreThenKeep):
    name = "pdrop"
    title = "PyramidDrop"
    Options = PDropOptions
    selection_queries = 1

    def __init__(self, options: PDropOptions):
        super().__init__(options)
        self.boundaries = tuple(options.layers)
        self.compact_positions = options.positions == "compact"

    def stage_counts(self, n_in: int, units: int = 1) -> list[int]:
        return [pdrop_count(n_in, self.options.ratio, k) for k in range(1, len(self.boundaries) + 1)]

    def begin_prefill(self, batch) -> list[int]:
        """N0 per row: the visual counts measured as the prefill enters the LLM (PD-3)."""
        return batch.visual_len.tolist()

    def keep_count(self, stage: int, row: int, n_visual: int, state: list[int]) -> int:
        if state is None or row >= len(state):
            raise RuntimeError("PDrop.reduce needs the state of begin_prefill (N0, the measured entering counts)")
        return pdrop_count(state[row], self.options.ratio, stage)
