"""VisPruner: important patches by CLS attention plus diverse patches by iterative similarity-based removal,
at the CLIP output (CLS dropped), in ascending order; the LLM runs unchanged (docs/methods.md, 'VisPruner').

Named differences from the release (docs/baselines.md, "Fairness"): `ties` (the release sorts with an unstable
argsort, so exact ties break differently run to run; default: ties go to the lowest list position, an order the
release can produce) and `precision` (default: the tower's dtype, as the release; `fp32`: the CLS softmax
and the similarities in fp32). Odd residual counts, which crash the release, split as a = ceil(R/2), b = floor(R/2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from visiondrop.execution import Execution
from visiondrop.layers import TowerLayerView
from visiondrop.methods.base import Method
from visiondrop.models import Geometry
from visiondrop.reduction import UnitTokens


@dataclass
class VisPrunerOptions:
    """`tokens` = T visual tokens kept; floor(T * important_ratio) of them by CLS attention, the rest diverse."""

    tokens: int = 64
    important_ratio: float = 0.5
    ties: str = "lowest_index"  # stable sorts (ties -> lowest list position); "unstable": the release's argsort
    precision: str = "tower"  # CLS softmax and similarities in the tower's dtype (release); "fp32": both in fp32

    def __post_init__(self):
        if self.tokens < 1:
            raise ValueError(f"tokens={self.tokens}: keep at least one visual token")
        if not 0 <= self.important_ratio <= 1:
            raise ValueError(f"important_ratio={self.important_ratio}: expected a value in [0, 1]")
        if self.ties not in ("lowest_index", "unstable"):
            raise ValueError(f"ties={self.ties!r}: expected 'lowest_index' (deterministic) or 'unstable' (release)")
        if self.precision not in ("tower", "fp32"):
            raise ValueError(f"precision={self.precision!r}: expected 'tower' (release) or 'fp32'")


def diverse_subset_batched(tokens: torch.Tensor, residual: torch.Tensor, n_keep: int, step: int = 8,
                           stable: bool = True) -> torch.Tensor:
    """VisPruner's diverse tokens (docs/methods.md, 'VisPruner') for every image at once: tokens [n, T, C],
    residual [n, R] -> [n, n_keep]. Each round splits the list into a = even and b = odd positions, drops the
    r = min(step, len - n_keep) a-tokens most similar to any b-token (max cosine) and continues with [remaining a,
    descending similarity] + [all b]. Similarities are computed once in the dtype of `tokens`; every round runs with a
    leading image dim on list positions, with shapes known on the host (no device sync).
    """
    if n_keep <= 0:
        return residual[:, :0]
    unit = F.normalize(torch.take_along_dim(tokens, residual[..., None], dim=1), dim=-1)
    similarity = unit @ unit.transpose(1, 2)  # [n, R, R] over residual list positions
    pos = torch.arange(residual.shape[1], device=residual.device).expand_as(residual)
    while pos.shape[1] > n_keep:
        r = min(step, pos.shape[1] - n_keep)
        a, b = pos[:, 0::2], pos[:, 1::2]
        rows = torch.take_along_dim(similarity, a[..., None], dim=1)
        best = torch.take_along_dim(rows, b[:, None, :], dim=2).amax(dim=-1)
        order = torch.sort(best, dim=-1, descending=True, stable=stable).indices[:, r:]
        pos = torch.cat([torch.take_along_dim(a, order, dim=1), b], dim=1)
    return torch.take_along_dim(residual, pos, dim=1)


class VisPruner(Method):
    name = "vispruner"
    title = "VisPruner"
    Options = VisPrunerOptions
    has_encoder_stage = True
    variant_fields = ("ties", "precision")

    def tower_tokens(self, geometry: Geometry) -> int:
        """T per unit: NeXT's nominal 5 sub-images keep 5 T (public repo's per-sub-image path)."""
        if self.options.tokens > geometry.patches_per_unit:
            raise ValueError(f"tokens={self.options.tokens} exceeds the {geometry.patches_per_unit} patch tokens per "
                             "unit")
        return geometry.units * self.options.tokens

    def reduce_encoder(self, layer: TowerLayerView, layer_input: torch.Tensor, features: torch.Tensor,
                       run: Execution) -> UnitTokens:
        opts = self.options
        n_important = math.floor(opts.tokens * opts.important_ratio)
        fp32, stable = opts.precision == "fp32", opts.ties == "lowest_index"
        probs, _ = layer.cls_attention(layer_input, fp32_softmax=fp32)
        scores = probs.mean(dim=1)[:, 1:]  # head mean, patch columns (CLS dropped)
        patches = features[:, 1:]
        order = torch.sort(scores, dim=-1, descending=True, stable=stable).indices
        diverse = diverse_subset_batched(patches.float() if fp32 else patches, order[:, n_important:],
                                         opts.tokens - n_important, stable=stable)
        origin = torch.cat([order[:, :n_important], diverse], dim=1).sort(dim=-1).values
        return UnitTokens(torch.take_along_dim(patches, origin[..., None], dim=1), origin, opts.tokens)
