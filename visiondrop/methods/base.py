"""The interface every pruning method implements, and the no-pruning method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from visiondrop.reduction import Reduction


class Method:
    """A visual-token reduction method acting at the encoder output and/or at LLM stage boundaries.

    `boundaries` are decoder-layer indices l where the method reduces the sequence before layer l runs
    ("prune after layer l" in the papers' 1-based wording). `compact_positions` says whether kept tokens get
    contiguous positions (VisionDrop, PDrop) or keep their original ones (FastV).
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type]
    has_encoder_stage: ClassVar[bool] = False
    compact_positions: bool = True

    def __init__(self, options):
        self.options = options
        self.boundaries: tuple[int, ...] = ()

    def tower_tokens(self, n_visual: int) -> int:
        """Visual tokens that enter the LLM for a tower producing `n_visual` patch tokens."""
        return n_visual

    def stage_counts(self, n_in: int) -> list[int]:
        """Visual tokens after each boundary, for a sample entering the LLM with `n_in` tokens."""
        return []

    def layer_counts(self, n_visual: int, n_layers: int) -> list[int]:
        """Expected visual tokens in the input of every decoder layer (the accounting rule)."""
        if self.boundaries and max(self.boundaries) >= n_layers:
            raise ValueError(f"boundary after layer {max(self.boundaries)} but the model has {n_layers} layers")
        counts, current = [], self.tower_tokens(n_visual)
        after = dict(zip(self.boundaries, self.stage_counts(current)))
        for layer in range(n_layers):
            current = after.get(layer, current)
            counts.append(current)
        return counts

    def reduce_encoder(self, layer_input: torch.Tensor, features: torch.Tensor, layer: nn.Module,
                       select_feature: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduce tower tokens [n, T, C] -> ([n, T', C], origin [T']) (CLS = -1)."""
        raise NotImplementedError

    def reduce(self, stage: int, layer_idx: int, batch, layer: nn.Module, rope: tuple) -> list[Reduction | None]:
        """Reduce the visual segment of every sample before `layer_idx` runs (stage 1, 2, ...)."""
        raise NotImplementedError


@dataclass
class NoOptions:
    """The unpruned model takes no options."""


class NoPruning(Method):
    """The unpruned model (the `none` method, the 100% row of every table)."""

    name = "none"
    Options = NoOptions
