"""A method that exists only in this file runs through the seams: registered, configured, budget-checked, pruned
inside the LLM and counted, with no other file edited (the "add a method" checklist, README)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from conftest import encode_prompt, stand_in_image

from visiondrop.config import ConfigError, load_config
from visiondrop.methods import METHODS
from visiondrop.methods.base import ScoreThenKeep


@dataclass
class KeepEveryOtherOptions:
    layer: int = 4  # prune before this decoder layer


class KeepEveryOther(ScoreThenKeep):
    """Toy method: before `layer`, keep the visual tokens at even segment positions (a score, then the base keeps)."""

    name = "keep_every_other"
    title = "Keep every other"
    Options = KeepEveryOtherOptions

    def __init__(self, options: KeepEveryOtherOptions):
        super().__init__(options)
        self.boundaries = (options.layer,)

    def stage_counts(self, n_in: int, units: int = 1) -> list[int]:
        return [(n_in + 1) // 2]

    def keep_count(self, stage, row, n_visual, state) -> int:
        return (n_visual + 1) // 2

    def score(self, hidden, layer, cos, sin, columns, last=None) -> torch.Tensor:
        n = columns.stop - columns.start
        even = (torch.arange(n, device=hidden.device) % 2 == 0).float()
        return even.expand(hidden.shape[0], n) if hidden.dim() == 3 else even


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(METHODS, KeepEveryOther.name, KeepEveryOther)


def test_a_method_defined_in_a_test_file_runs_through_the_seams(registered, load_tiny):
    tok, model = load_tiny()
    config = load_config(raw={"method": "keep_every_other", "model": "llava-v1.5-7b", "budget": 324, "layer": 4})
    model.set_pruning(config)
    model(encode_prompt(tok, "<image>\nWhat is this?")[None], images=stand_in_image(3))
    stats = model.last_stats
    assert stats.visual_per_layer[:, 0].tolist() == [576] * 4 + [288] * 28
    assert stats.stage_origins[1][0].tolist() == list(range(0, 576, 2))  # the even positions, in order
    with pytest.raises(ConfigError, match="averages 324.00 visual tokens"):
        load_config(raw={"method": "keep_every_other", "model": "llava-v1.5-7b", "budget": 300, "layer": 4})
    model.set_pruning(load_config())
