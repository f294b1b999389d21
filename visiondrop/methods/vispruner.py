"""VisPruner: important patches by CLS attention plus diverse patches by iterative similarity-based removal,
at the CLIP output (CLS dropped), in ascending order; the LLM runs unchanged (methods spec §5)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from visiondrop.merging import diverse_subset
from visiondrop.methods.base import Method
from visiondrop.scoring import clip_cls_attention


@dataclass
class VisPrunerOptions:
    """`tokens` = T visual tokens kept; floor(T * important_ratio) of them by CLS attention, the rest diverse."""

    tokens: int = 64
    important_ratio: float = 0.5

    def __post_init__(self):
        if self.tokens < 1:
            raise ValueError(f"tokens={self.tokens}: keep at least one visual token")
        if not 0 <= self.important_ratio <= 1:
            raise ValueError(f"important_ratio={self.important_ratio}: expected a value in [0, 1]")


class VisPruner(Method):
    name = "vispruner"
    Options = VisPrunerOptions
    has_encoder_stage = True

    def tower_tokens(self, n_visual: int) -> int:
        if self.options.tokens > n_visual:
            raise ValueError(f"tokens={self.options.tokens} exceeds the {n_visual} patch tokens")
        return self.options.tokens

    def reduce_encoder(self, layer_input: torch.Tensor, features: torch.Tensor, layer: nn.Module,
                       select_feature: str) -> tuple[torch.Tensor, torch.Tensor]:
        total = self.options.tokens
        n_important = math.floor(total * self.options.important_ratio)
        probs, _ = clip_cls_attention(layer_input, layer)
        scores = probs.mean(dim=1)[:, 1:]  # head mean, patch columns (CLS dropped)
        patches = features[:, 1:]
        kept = []
        for i in range(patches.shape[0]):
            order = torch.sort(scores[i], descending=True, stable=True).indices
            diverse = diverse_subset(patches[i], order[n_important:], total - n_important)
            kept.append(torch.cat([order[:n_important], diverse]).sort().values)
        origin = torch.stack(kept)
        return torch.stack([patches[i, k] for i, k in enumerate(kept)]), origin
