"""SparseVLM v1.5: text raters chosen once from the embeddings; after each sparse layer, keep the visual tokens
the raters attend to most in that layer's own attention and recycle part of the pruned ones into DPC-KNN
cluster means placed after the kept tokens; compacted positions (docs/methods.md, 'SparseVLM v1.5').

Named differences from the release (docs/baselines.md, "Fairness"): `seed` (the release's 1e-6 density noise is
unseeded; ours is drawn from a generator seeded per stage, one of the draws the release can make) and
`cluster_precision` (default `model`: the clustering in the hidden states' dtype, fp16 as the release; `fp32`).
The budget-matched configs (`*_matched.yaml`) re-solve the published `tokens` lists so that the per-layer average
equals the nominal budget under the project's accounting rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from visiondrop.layers import DecoderLayerView
from visiondrop.merging import dpc_knn_merge
from visiondrop.methods.base import Method, SampleView, per_sample
from visiondrop.reduction import Reduction, Reductions
from visiondrop.scoring import attention_to_columns, llm_query_key

RECYCLE_RATIO = 0.3  # top floor(0.3 * pruned) + 1 pruned tokens are recycled
TOKENS_PER_CLUSTER = 10  # into floor(recycled / 10) + 1 clusters
PUBLISHED_TOKENS = ([300, 200, 110], [303, 110, 36], [66, 30, 17])  # score.py lists for 192 / 128 / 64


@dataclass
class SparseVLMOptions:
    """`layers`: sparse layers (0-based) whose outputs are pruned; `tokens`: kept per stage (score.py lists)."""

    layers: list[int] = field(default_factory=lambda: [2, 6, 15])
    tokens: list[int] = field(default_factory=lambda: [66, 30, 17])
    seed: int = 0  # seeds the 1e-6 density noise of the clustering (SV-2; unseeded in the reference)
    cluster_precision: str = "model"  # DPC-KNN in the hidden states' dtype (release); "fp32"

    def __post_init__(self):
        if sorted(set(self.layers)) != list(self.layers) or not self.layers or self.layers[0] < 0:
            raise ValueError(f"layers must be strictly increasing layer indices >= 0, got {self.layers}")
        if len(self.tokens) != len(self.layers) or min(self.tokens) < 1:
            raise ValueError(f"tokens needs one count >= 1 per sparse layer, got {self.tokens} for {self.layers}")
        if self.cluster_precision not in ("model", "fp32"):
            raise ValueError(f"cluster_precision={self.cluster_precision!r}: expected 'model' (release) or 'fp32'")


def recycle_sizes(n_pruned: int) -> tuple[int, int]:
    """(recycled tokens, clusters) for `n_pruned` pruned tokens."""
    if n_pruned == 0:
        return 0, 0
    recycled = min(n_pruned, int(RECYCLE_RATIO * n_pruned) + 1)
    return recycled, min(recycled, recycled // TOKENS_PER_CLUSTER + 1)


def text_raters(visual: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Indices of the text tokens [t, D] rated above the mean by the visual embeddings [n, D]
    (docs/methods.md, 'SparseVLM v1.5')."""
    relevance = (visual @ text.T).softmax(dim=-1).mean(dim=0)
    raters = torch.nonzero(relevance > relevance.mean()).flatten()
    return raters if raters.numel() else torch.arange(text.shape[0], device=text.device)  # all equal: use all


class SparseVLM(Method):
    name = "sparsevlm"
    title = "SparseVLM"
    Options = SparseVLMOptions
    score_layer_offset = -1
    variant_fields = ("seed", "cluster_precision")

    def __init__(self, options: SparseVLMOptions):
        super().__init__(options)
        self.boundaries = tuple(layer + 1 for layer in options.layers)

    def variant(self) -> str:
        lists = "published lists" if list(self.options.tokens) in PUBLISHED_TOKENS else "re-solved lists"
        return f"{lists} {list(self.options.tokens)}, {super().variant()}"

    def stage_counts(self, n_in: int, units: int = 1) -> list[int]:
        counts, current = [], n_in
        for keep in self.options.tokens:
            kept = min(keep, current - 1)
            current = kept + recycle_sizes(current - kept)[1]
            counts.append(current)
        return counts

    def begin_prefill(self, batch) -> list[torch.Tensor | None]:
        """The raters of every row (indices relative to the text after the image; None for text-only rows)."""
        raters = []
        for b in range(batch.hidden.shape[0]):
            start, n_vis, n_real = int(batch.visual_start[b]), int(batch.visual_len[b]), int(batch.lengths[b])
            if n_vis == 0:
                raters.append(None)
                continue
            if start + n_vis >= n_real:
                raise ValueError(f"SparseVLM: sample {b} has no text after the image to rate visual tokens")
            embeds = batch.hidden[b]
            raters.append(text_raters(embeds[start:start + n_vis], embeds[start + n_vis:n_real]))
        return raters

    def reduce(self, stage, batch, layer, rope, state, run) -> Reductions:
        if state is None or len(state) != batch.hidden.shape[0] or batch.layer_input is None:
            raise RuntimeError("SparseVLM.reduce needs the raters of begin_prefill and the sparse layer's input")
        return per_sample(batch, rope, lambda s: self._reduce_sample(s, layer, stage, state[s.index]))

    def _reduce_sample(self, s: SampleView, layer: DecoderLayerView, stage: int, raters: torch.Tensor) -> Reduction:
        rows = raters + s.start + s.n_visual
        q, k = llm_query_key(s.layer_input, layer, s.cos, s.sin, rows)
        scores = attention_to_columns(q, k, rows, s.visual, fp32_softmax=False)
        order = torch.sort(scores, descending=True, stable=True).indices
        n_kept = min(self.options.tokens[stage - 1], s.n_visual - 1)
        pruned = order[n_kept:]
        n_recycled, n_clusters = recycle_sizes(pruned.numel())
        recycled = pruned[:n_recycled]
        generator = torch.Generator().manual_seed(self.options.seed + stage)
        dtype = torch.float32 if self.options.cluster_precision == "fp32" else None
        merged, centres = dpc_knn_merge(s.hidden[s.visual][recycled], n_clusters, generator, dtype)
        return Reduction(keep=order[:n_kept].sort().values, merged=merged, merged_index=recycled[centres])
