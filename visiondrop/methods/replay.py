"""Replay: hold a method's in-LLM decisions fixed across forwards (prefill-decode consistency checks)."""

from __future__ import annotations

from visiondrop.methods.base import Method
from visiondrop.reduction import Reduction


class Replay:
    """Wraps a method as the decoder loop's reducer: the first prefill records its reductions per stage, later
    prefills replay them unchanged. Valid when later sequences keep the recorded prefix and visual segments
    (e.g. prompt + generated tokens), so a pruned forward can be recomputed with the decisions frozen."""

    def __init__(self, method: Method):
        self.method = method
        self.recorded: dict[int, list[Reduction | None]] = {}

    def __getattr__(self, name: str):
        if name in ("method", "recorded"):  # not yet set (copy / unpickling): never recurse
            raise AttributeError(name)
        return getattr(self.method, name)  # boundaries, compact_positions, score_layer_offset, ...

    def begin_prefill(self, batch) -> None:
        if not self.recorded:
            self.method.begin_prefill(batch)

    def reduce(self, stage: int, layer_idx: int, batch, layer, rope) -> list[Reduction | None]:
        if stage not in self.recorded:
            self.recorded[stage] = self.method.reduce(stage, layer_idx, batch, layer, rope)
        return self.recorded[stage]
