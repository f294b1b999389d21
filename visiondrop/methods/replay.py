"""Replay: hold a method's in-LLM decisions fixed across forwards (prefill-decode consistency checks)."""

from __future__ import annotations

from visiondrop.methods.base import Method
from visiondrop.reduction import Reductions


class Replay:
    """A stage reducer (called like `Method.reduce`) whose first prefill records the method's reductions per stage;
    later prefills replay them unchanged. Valid when later sequences keep the recorded prefix and visual segments
    (e.g. prompt + generated tokens), so a pruned forward can be recomputed with the decisions frozen."""

    def __init__(self, method: Method):
        self.method = method
        self.recorded: dict[int, Reductions] = {}

    def __call__(self, stage, batch, layer, rope, state, run) -> Reductions:
        if stage not in self.recorded:
            self.recorded[stage] = self.method.reduce(stage, batch, layer, rope, state, run)
        return self.recorded[stage]
