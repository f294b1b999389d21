"""VisionZip: dominant tokens (CLS + top CLS-attention patches) and contextual merged tokens at the CLIP
output, before the projector; the LLM runs unchanged (methods spec §4)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from visiondrop.encoder_stage import dominant_contextual, nominal_sub_images
from visiondrop.methods.base import Method


@dataclass
class VisionZipOptions:
    """`dominant` counts the CLS token (official visionzip(dominant=, contextual=))."""

    dominant: int = 54
    contextual: int = 10
    fusion: str = "target_plus_mean"  # VZ-2 clean option: size_weighted

    def __post_init__(self):
        if self.dominant < 1 or self.contextual < 0:
            raise ValueError(f"dominant={self.dominant} must be >= 1 (it counts CLS), contextual >= 0")
        if self.fusion not in ("target_plus_mean", "size_weighted"):
            raise ValueError(f"fusion={self.fusion!r}: expected 'target_plus_mean' or 'size_weighted'")


class VisionZip(Method):
    name = "visionzip"
    Options = VisionZipOptions
    has_encoder_stage = True

    def tower_tokens(self, n_visual: int) -> int:
        """(dominant + contextual) per sub-image: NeXT's nominal 2880 = 5 sub-images keeps 5x (spec 4.2/4.3)."""
        units = nominal_sub_images(n_visual)
        total, limit = self.options.dominant + self.options.contextual, n_visual // units + 1
        if total > limit:
            raise ValueError(f"dominant + contextual = {total} exceeds the {limit} tower tokens per sub-image "
                             "(CLS + patches)")
        return units * total

    def reduce_encoder(self, layer_input: torch.Tensor, features: torch.Tensor, layer: nn.Module,
                       select_feature: str) -> tuple[torch.Tensor, torch.Tensor]:
        opts = self.options
        return dominant_contextual(layer_input, features, layer, opts.dominant, opts.contextual, opts.fusion)
