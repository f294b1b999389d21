"""VisionZip: dominant tokens (CLS + top CLS-attention patches) and contextual merged tokens at the CLIP
output, before the projector; the LLM runs unchanged (docs/methods.md, 'VisionZip').

Named difference from the release (docs/baselines.md, "Fairness"): `cls_softmax` (default `tower`: the CLS
attention softmax in the tower's dtype, as the release's patched CLIP attention: fp16 on NeXT, whose tower is
fp16, fp32 on LLaVA-1.5; `fp32`: always in fp32, cast back).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from visiondrop.encoder_stage import dominant_contextual
from visiondrop.execution import Execution
from visiondrop.layers import TowerLayerView
from visiondrop.methods.base import Method, check_count_basis, scale_pair
from visiondrop.models import Geometry
from visiondrop.reduction import UnitTokens


@dataclass
class VisionZipOptions:
    """`dominant` counts the CLS token (official visionzip(dominant=, contextual=))."""

    dominant: int = 54
    contextual: int = 10
    fusion: str = "target_plus_mean"  # VZ-2 clean option: size_weighted
    cls_softmax: str = "tower"  # the release's precision; "fp32": softmax in fp32, cast back
    count_basis: int | None = None  # counts written for an image of this many tokens, scaled per image (Qwen2.5-VL)

    def __post_init__(self):
        if self.dominant < 1 or self.contextual < 0:
            raise ValueError(f"dominant={self.dominant} must be >= 1 (it counts CLS), contextual >= 0")
        if self.fusion not in ("target_plus_mean", "size_weighted"):
            raise ValueError(f"fusion={self.fusion!r}: expected 'target_plus_mean' or 'size_weighted'")
        if self.cls_softmax not in ("tower", "fp32"):
            raise ValueError(f"cls_softmax={self.cls_softmax!r}: expected 'tower' (release) or 'fp32'")
        check_count_basis(self.count_basis)


class VisionZip(Method):
    name = "visionzip"
    title = "VisionZip"
    Options = VisionZipOptions
    has_encoder_stage = True
    scores_without_cls = True
    variant_fields = ("fusion", "cls_softmax")

    def tower_tokens(self, geometry: Geometry) -> int:
        """(dominant + contextual) per unit: NeXT's nominal 5 sub-images keep 5x (docs/methods.md, 'VisionZip',
        'NeXT layout'); under `count_basis` the pair scales with the unit's tokens)."""
        limit = geometry.tower_tokens_per_unit
        total = sum(self._pair(limit))
        if total > limit:
            raise ValueError(f"dominant + contextual = {total} exceeds the {limit} tower tokens per unit "
                             "(CLS + patches)")
        return geometry.units * total

    def reduce_encoder(self, layer: TowerLayerView, layer_input: torch.Tensor, features: torch.Tensor,
                       run: Execution) -> UnitTokens:
        opts = self.options
        dominant, contextual = self._pair(features.shape[1])
        out = dominant_contextual(layer_input, features, layer, dominant, contextual, opts.fusion,
                                  fp32_softmax=opts.cls_softmax == "fp32")
        return UnitTokens(*out, dominant=dominant)

    def _pair(self, n_tokens: int) -> tuple[int, int]:
        """(dominant, contextual) for a unit of `n_tokens` tower tokens."""
        return scale_pair(self.options.dominant, self.options.contextual, n_tokens, self.options.count_basis)
