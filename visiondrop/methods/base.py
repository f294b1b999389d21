"""The interface every pruning method implements, and the no-pruning method."""

from __future__ import annotations

from collections.abc import Callable
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
    `score_layer_offset` says which layer's attention scores a boundary l: 0 = layer l (the layer about to
    run); -1 = layer l-1 (its own attention, FastV, SparseVLM): `reduce` then gets layers[l-1] and that
    layer's input hidden states as `batch.layer_input` (`batch.hidden` stays the output of layer l-1).
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type]
    has_encoder_stage: ClassVar[bool] = False
    compact_positions: bool = True
    cached_decode: bool = True  # False: decode re-runs the pruned prefill every step (FastV's dynamic mode)
    score_layer_offset: ClassVar[int] = 0
    variant_fields: ClassVar[tuple[str, ...]] = ()  # options where a run may differ from the release

    def __init__(self, options):
        self.options = options
        self.boundaries: tuple[int, ...] = ()

    def variant(self) -> str:
        """Which variant runs, for result records and tables: the named options that may differ from the release."""
        return ", ".join(f"{name}={getattr(self.options, name)}" for name in self.variant_fields)

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

    def min_budget(self, n_visual: int, n_layers: int) -> float:
        """Lowest average visual count the method can reach: layers before its first boundary keep all tokens."""
        if self.has_encoder_stage:
            return 0.0
        first = min(self.boundaries, default=n_layers)
        return first * n_visual / n_layers

    def options_for_budget(self, budget: float, n_visual: int, n_layers: int):
        """Options with any count left unset derived from the nominal budget (default: unchanged)."""
        return self.options

    def begin_prefill(self, batch) -> None:
        """Called once per prefill with the layer-0 batch (embeddings), before any decoder layer runs."""

    def reduce_encoder(self, layer_input: torch.Tensor, features: torch.Tensor, layer: nn.Module,
                       select_feature: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduce tower tokens [n, T, C] -> ([n, T', C], origin [T']) (CLS = -1)."""
        raise NotImplementedError

    def reduce(self, stage: int, layer_idx: int, batch, layer: nn.Module, rope: tuple) -> list[Reduction | None]:
        """Reduce the visual segment of every sample before `layer_idx` runs (stage 1, 2, ...)."""
        raise NotImplementedError


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


def per_sample(batch, rope: tuple, fn: Callable[[SampleView], Reduction]) -> list[Reduction | None]:
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
    return out


@dataclass
class NoOptions:
    """The unpruned model takes no options."""


class NoPruning(Method):
    """The unpruned model (the `none` method, the 100% row of every table)."""

    name = "none"
    Options = NoOptions
