"""VisPruner: important patches by CLS attention plus diverse patches by iterative similarity-based removal,
at the CLIP output (CLS dropped), in ascending order; the LLM runs unchanged (methods spec §5)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from visiondrop.encoder_stage import nominal_sub_images
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


def diverse_subset_batched(tokens: torch.Tensor, residual: torch.Tensor, n_keep: int, step: int = 8) -> torch.Tensor:
    """VisPruner's diverse tokens (methods spec §5) for every image at once: tokens [n, T, C], residual [n, R]
    -> [n, n_keep]. Each round splits the list into a = even and b = odd positions, drops the r = min(step,
    len - n_keep) a-tokens most similar to any b-token (max cosine) and continues with [remaining a, descending
    similarity] + [all b]. All images have the same counts, so every round has the same shapes: similarities
    among the residual tokens are computed once and each round runs with a leading image dim on list
    positions. Shapes are known on the host, so the rounds never wait for the device.
    """
    if n_keep <= 0:
        return residual[:, :0]
    unit = F.normalize(torch.take_along_dim(tokens, residual[..., None], dim=1).float(), dim=-1)
    similarity = unit @ unit.transpose(1, 2)  # [n, R, R] over residual list positions
    pos = torch.arange(residual.shape[1], device=residual.device).expand_as(residual)
    while pos.shape[1] > n_keep:
        r = min(step, pos.shape[1] - n_keep)
        a, b = pos[:, 0::2], pos[:, 1::2]
        rows = torch.take_along_dim(similarity, a[..., None], dim=1)
        best = torch.take_along_dim(rows, b[:, None, :], dim=2).amax(dim=-1)
        order = torch.sort(best, dim=-1, descending=True, stable=True).indices[:, r:]
        pos = torch.cat([torch.take_along_dim(a, order, dim=1), b], dim=1)
    return torch.take_along_dim(residual, pos, dim=1)


class VisPruner(Method):
    name = "vispruner"
    Options = VisPrunerOptions
    has_encoder_stage = True

    def tower_tokens(self, n_visual: int) -> int:
        """T per sub-image: NeXT's nominal 2880 = 5 sub-images keeps 5 T (public repo's per-sub-image path)."""
        units = nominal_sub_images(n_visual)
        if self.options.tokens > n_visual // units:
            raise ValueError(f"tokens={self.options.tokens} exceeds the {n_visual // units} patch tokens per "
                             "sub-image")
        return units * self.options.tokens

    def reduce_encoder(self, layer_input: torch.Tensor, features: torch.Tensor, layer: nn.Module,
                       select_feature: str) -> tuple[torch.Tensor, torch.Tensor]:
        total = self.options.tokens
        n_important = math.floor(total * self.options.important_ratio)
        probs, _ = clip_cls_attention(layer_input, layer)
        scores = probs.mean(dim=1)[:, 1:]  # head mean, patch columns (CLS dropped)
        patches = features[:, 1:]
        order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
        diverse = diverse_subset_batched(patches, order[:, n_important:], total - n_important)
        origin = torch.cat([order[:, :n_important], diverse], dim=1).sort(dim=-1).values
        return torch.take_along_dim(patches, origin[..., None], dim=1), origin
