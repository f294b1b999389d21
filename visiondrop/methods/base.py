"""The interface every pruning method implements, and the no-pruning method."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from visiondrop.execution import Execution
from visiondrop.layers import DecoderLayerView, TowerLayerView
from visiondrop.merging import top_indices_ascending
from visiondrop.models import Geometry
from visiondrop.reduction import Reduction, Reductions, UnitTokens
from visiondrop.scoring import last_token_attention


class Method:
    """A visual-token reduction method: a pure *schedule* (what config validation, the accounting rule and the FLOPs
    report read) plus three runtime calls that take and return batched values. Per-forward state is returned by
    `begin_prefill` and handed back to `reduce`, never stored on the method; how stage work executes (Triton or
    torch, CUDA graphs) is the shared `visiondrop.execution.Execution` passed in.

    Schedule: `boundaries` are decoder-layer indices l where the method reduces the sequence before layer l runs
    ("prune after layer l" in the papers' 1-based wording). `compact_positions`: kept tokens get contiguous
    positions (VisionDrop, PDrop) or keep their original ones (FastV). `score_layer_offset`: which layer's
    attention scores a boundary l: 0 = layer l (the layer about to run); -1 = layer l-1 (its own attention, FastV,
    SparseVLM): `reduce` then gets layers[l-1] and that layer's input hidden states as `batch.layer_input`
    (`batch.hidden` stays the output of layer l-1). `selection_queries`: queries each LLM boundary's scoring runs
    ("visual": every visual token, an int, or None where it adds no counted FLOPs) for the FLOPs report.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # the display name (figures, tables)
    Options: ClassVar[type]
    has_encoder_stage: ClassVar[bool] = False
    scores_without_cls: ClassVar[bool] = False  # its encoder stage runs on a tower without CLS (received attention)
    compact_positions: bool = True
    cached_decode: bool = True  # False: decode re-runs the pruned prefill every step (FastV's dynamic mode)
    score_layer_offset: ClassVar[int] = 0
    selection_queries: int | str | None = None
    variant_fields: ClassVar[tuple[str, ...]] = ()  # options where a run may differ from the release

    def __init__(self, options):
        self.options = options
        self.boundaries: tuple[int, ...] = ()

    def variant(self) -> str:
        """Which variant runs, for result records and tables: the named options that may differ from the release."""
        return ", ".join(f"{name}={getattr(self.options, name)}" for name in self.variant_fields)

    # ---- schedule -----------------------------------------------------------------------------------------------

    def tower_tokens(self, geometry: Geometry) -> int:
        """Visual tokens entering the LLM for a sample of the nominal `geometry` (after any encoder stage)."""
        return geometry.visual_tokens

    def stage_counts(self, n_in: int, units: int = 1) -> list[int]:
        """Visual tokens after each boundary, for a sample of `units` units entering the LLM with `n_in` tokens."""
        return []

    def sample_counts(self, n_in: int, units: int, n_layers: int) -> list[int]:
        """Visual tokens in the input of every decoder layer (the accounting rule) for a sample of `units` units
        entering the LLM with `n_in` visual tokens."""
        if self.boundaries and max(self.boundaries) >= n_layers:
            raise ValueError(f"boundary after layer {max(self.boundaries)} but the model has {n_layers} layers")
        after = dict(zip(self.boundaries, self.stage_counts(n_in, units)))
        counts, current = [], n_in
        for layer in range(n_layers):
            current = after.get(layer, current)
            counts.append(current)
        return counts

    def layer_counts(self, geometry: Geometry) -> list[int]:
        """Expected visual tokens in the input of every decoder layer on the nominal geometry."""
        return self.sample_counts(self.tower_tokens(geometry), geometry.units, geometry.layers)

    def min_budget(self, geometry: Geometry) -> float:
        """Lowest average visual count the method can reach: layers before its first boundary keep all tokens."""
        if self.has_encoder_stage:
            return 0.0
        first = min(self.boundaries, default=geometry.layers)
        return first * geometry.visual_tokens / geometry.layers

    def options_for_budget(self, budget: float, geometry: Geometry):
        """Options with any count left unset derived from the nominal budget (default: unchanged)."""
        return self.options

    # ---- runtime ------------------------------------------------------------------------------------------------

    def reduce_encoder(self, layer: TowerLayerView, layer_input: torch.Tensor, features: torch.Tensor,
                       run: Execution) -> UnitTokens:
        """Reduce the tower tokens [n, T, C] of every unit at once (`layer`: the tower layer that produced them
        from `layer_input`)."""
        raise NotImplementedError

    def begin_prefill(self, batch) -> object:
        """Called once per prefill with the layer-0 batch (embeddings); returns this forward's state for `reduce`."""
        return None

    def reduce(self, stage: int, batch, layer: DecoderLayerView, rope: tuple, state: object,
               run: Execution) -> Reductions:
        """Reduce the visual segment of every row before boundary `stage` (1, 2, ...); `layer` scores it."""
        raise NotImplementedError


def check_positions(value: str, key: str) -> None:
    """A position rule after pruning: 'compact' (kept tokens re-indexed contiguously) or 'original' (kept)."""
    if value not in ("compact", "original"):
        raise ValueError(f"{key}={value!r}: expected 'compact' or 'original'")


def check_count_basis(basis: int | None) -> None:
    """`count_basis` is null (absolute counts) or a positive token count."""
    if basis is not None and basis < 1:
        raise ValueError(f"count_basis={basis}: expected null (absolute counts) or the nominal image's token count")


def scale_pair(dominant: int, contextual: int, n: int, basis: int | None) -> tuple[int, int]:
    """A (dominant, contextual) pair written for `basis` tokens, for a sample of `n` (None: unchanged): the total
    and the dominant count each scale by n / basis, rounded half up (at least one token, dominant first), and the
    contextual count is what the total leaves; so a schedule that shrinks stage by stage still does after scaling."""
    if basis is None:
        return dominant, contextual
    total = max(1, math.floor((dominant + contextual) * n / basis + 0.5))
    kept = min(total, max(1, math.floor(dominant * n / basis + 0.5)))
    return kept, total - kept


class ScoreThenKeep(Method):
    """In-LLM pruning by a score alone (FastV, PDrop style): at each boundary, every row keeps the `keep_count`
    visual tokens of highest `score`, in sequence order. One batched pass when rows share the visual span and the
    count, else row by row. A subclass writes `keep_count` and, if it scores otherwise, `score`."""

    def keep_count(self, stage: int, row: int, n_visual: int, state: object) -> int:
        raise NotImplementedError

    def score(self, hidden: torch.Tensor, layer: DecoderLayerView, cos: torch.Tensor, sin: torch.Tensor,
              columns: slice, last: torch.Tensor | None = None) -> torch.Tensor:
        """Importance of the visual `columns`: the head-mean attention the last real token pays them (`hidden`: one
        row [T, D], or a padded batch [B, T, D] with each row's last real index in `last`)."""
        return last_token_attention(hidden, layer, cos, sin, columns, last)

    def scored_states(self, batch) -> torch.Tensor:
        """The hidden states the score layer reads: its own input when scoring with the previous layer."""
        if self.score_layer_offset == -1:
            if batch.layer_input is None:
                raise ValueError(f"{self.name} scores with the previous layer's input: the decoder loop must pass it")
            return batch.layer_input
        return batch.hidden

    def reduce(self, stage, batch, layer, rope, state, run) -> Reductions:
        span = shared_visual_span(batch)
        counts = {min(n, self.keep_count(stage, b, n, state)) for b, n in enumerate(batch.visual_len.tolist()) if n}
        if span is not None and len(counts) == 1:
            scores = self.score(self.scored_states(batch), layer, *rope, span, last=batch.lengths - 1)
            return Reductions(shared=Reduction(keep=top_indices_ascending(scores, counts.pop())))
        return per_sample(batch, rope, lambda s: self.reduce_sample(stage, s, layer, state))

    def reduce_sample(self, stage: int, s: SampleView, layer: DecoderLayerView, state: object) -> Reduction:
        keep = min(s.n_visual, self.keep_count(stage, s.index, s.n_visual, state))
        hidden = s.layer_input if self.score_layer_offset == -1 else s.hidden
        return Reduction(keep=top_indices_ascending(self.score(hidden, layer, s.cos, s.sin, s.visual), keep))


@dataclass
class SampleView:
    """One sample's real tokens at a boundary: hidden states, the scoring layer's input, RoPE, visual span."""

    index: int
    hidden: torch.Tensor
    layer_input: torch.Tensor | None
    cos: torch.Tensor
    sin: torch.Tensor
    start: int
    n_visual: int

    @property
    def visual(self) -> slice:
        return slice(self.start, self.start + self.n_visual)


def shared_visual_span(batch) -> slice | None:
    """The visual span when every row has the same non-empty one (then a batch can be scored at once)."""
    starts, lengths = set(batch.visual_start.tolist()), set(batch.visual_len.tolist())
    if len(starts) != 1 or len(lengths) != 1 or 0 in lengths:
        return None
    start = starts.pop()
    return slice(start, start + lengths.pop())


def per_sample(batch, rope: tuple, fn: Callable[[SampleView], Reduction]) -> Reductions:
    """Apply `fn` to every sample that has a visual segment; text-only samples get None (never pruned)."""
    cos, sin = rope
    out = []
    for b in range(batch.hidden.shape[0]):
        n_vis, n_real = int(batch.visual_len[b]), int(batch.lengths[b])
        if n_vis == 0:
            out.append(None)
            continue
        layer_input = None if batch.layer_input is None else batch.layer_input[b, :n_real]
        out.append(fn(SampleView(b, batch.hidden[b, :n_real], layer_input, cos[b, :n_real], sin[b, :n_real],
                                 int(batch.visual_start[b]), n_vis)))
    return Reductions(rows=out)


@dataclass
class NoOptions:
    """The unpruned model takes no options."""


class NoPruning(Method):
    """The unpruned model (the `none` method, the 100% row of every table)."""

    name = "none"
    title = "Unpruned"
    Options = NoOptions
