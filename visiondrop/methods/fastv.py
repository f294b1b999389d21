"""FastV: at the input of decoder layer K, keep the visual tokens the last prompt token attends to most in
layer K-1 (docs/methods.md, 'FastV'). Static mode: pruned once in prefill, original positions kept (with gaps).

Named differences from the release (docs/baselines.md, "Fairness"): `decode` (the release re-prunes at every
step without a cache: `dynamic`; the default `static` prunes once and keeps the cache) and `window_offset`
(the released scripts' image window starts one token late: `1` reproduces its keep list exactly).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from visiondrop.layers import DecoderLayerView
from visiondrop.merging import top_indices_ascending
from visiondrop.methods.base import SampleView, ScoreThenKeep, per_sample
from visiondrop.models import Geometry
from visiondrop.reduction import Reduction, Reductions


@dataclass
class FastVOptions:
    """K = layer whose input is pruned (scored with layer K-1's attention); `keep` = visual tokens kept."""

    K: int = 2
    keep: int | None = None  # None: derived from the config's budget, k = round((L*B - K*N) / (L - K))
    prune_ratio: float | None = None  # R: each sample keeps round(N_img * (1 - R)) of its own N_img (NeXT, 2.4)
    window_offset: int = 0  # 1: the released scripts' window [start+1, start+1+N) and keep-list rule (FV-1)
    decode: str = "static"  # static: prune once in prefill, KV cache (FV-3); dynamic: re-prune every step, no cache

    def __post_init__(self):
        if self.K < 1:
            raise ValueError(f"K={self.K}: FastV prunes the input of a layer K >= 1 (scored with layer K-1)")
        if self.keep is not None and self.keep < 1:
            raise ValueError(f"keep={self.keep}: keep at least one visual token")
        if self.prune_ratio is not None and self.keep is not None:
            raise ValueError("give keep (a fixed count) or prune_ratio (a per-sample fraction), not both")
        if self.prune_ratio is not None and not 0 <= self.prune_ratio < 1:
            raise ValueError(f"prune_ratio={self.prune_ratio}: the pruned fraction R must be in [0, 1)")
        if self.window_offset not in (0, 1):
            raise ValueError(f"window_offset={self.window_offset}: expected 0 (correct) or 1 (released scripts)")
        if self.decode not in ("static", "dynamic"):
            raise ValueError(f"decode={self.decode!r}: expected 'static' (cached, the only mode with a speed-up) "
                             "or 'dynamic' (the released scripts: no cache, re-pruned from the current last token)")


def fastv_keep(budget: float, n_visual: int, n_layers: int, first_pruned: int) -> int:
    """Visual tokens kept after layer K so that the average over layers is `budget` (docs/methods.md, 'FastV')."""
    if budget * n_layers < first_pruned * n_visual:
        raise ValueError(f"budget {budget} is below FastV's minimum K*N/L = {first_pruned}*{n_visual}/{n_layers} "
                         f"= {first_pruned * n_visual / n_layers:.1f}")
    return max(1, round((n_layers * budget - first_pruned * n_visual) / (n_layers - first_pruned)))


class FastV(ScoreThenKeep):
    name = "fastv"
    title = "FastV"
    Options = FastVOptions
    compact_positions = False
    score_layer_offset = -1
    variant_fields = ("decode", "window_offset")

    def __init__(self, options: FastVOptions):
        super().__init__(options)
        self.boundaries = (options.K,)
        self.cached_decode = options.decode == "static"

    def options_for_budget(self, budget: float, geometry: Geometry) -> FastVOptions:
        if self.options.keep is not None or self.options.prune_ratio is not None:
            return self.options
        keep = fastv_keep(budget, geometry.visual_tokens, geometry.layers, self.options.K)
        return replace(self.options, keep=keep)

    def keep_count(self, stage: int, row: int, n_visual: int, state: object) -> int:
        """The fixed count, or round(n_visual * (1 - R)) of the row's own visual tokens."""
        if self.options.prune_ratio is not None:
            return max(1, round(n_visual * (1 - self.options.prune_ratio)))
        if self.options.keep is None:
            raise ValueError("keep is not set: give fastv a keep count, a prune_ratio or a config budget")
        return self.options.keep

    def stage_counts(self, n_in: int, units: int = 1) -> list[int]:
        # window_offset 1 keeps visual token 0 besides the top-k, one fewer when the text token wins a slot
        return [min(n_in, self.keep_count(1, 0, n_in, None) + self.options.window_offset)]

    def reduce(self, stage, batch, layer, rope, state, run) -> Reductions:
        if not self.options.window_offset:
            return super().reduce(stage, batch, layer, rope, state, run)
        return per_sample(batch, rope, lambda s: self._released_window(s, layer))

    def _released_window(self, s: SampleView, layer: DecoderLayerView) -> Reduction:
        """The released scripts' window (FV-1): scored over [start + 1, start + 1 + N); visual token 0 sits before it
        and stays as "system text"; the first text token after the image (segment index n_visual) competes and is
        dropped unless it wins a slot (never the last token, the query being scored)."""
        if s.layer_input is None:
            raise ValueError("FastV scores with the input of layer K-1: the decoder loop must pass layer_input")
        n_real = s.hidden.shape[0]
        end = min(s.start + 1 + s.n_visual, n_real)
        scores = self.score(s.layer_input, layer, s.cos, s.sin, slice(s.start + 1, end))
        chosen = top_indices_ascending(scores, min(self.keep_count(1, s.index, s.n_visual, None), scores.numel())) + 1
        text_lost = not bool((chosen == s.n_visual).any()) and s.start + s.n_visual < n_real - 1
        return Reduction(keep=torch.cat([chosen.new_zeros(1), chosen[chosen < s.n_visual]]), drop_after=int(text_lost))
