"""VisionDrop: visual-only importance, dominant selection and contextual merging, at the vision-encoder
output (stage s0) and before LLM layers 8/16/24 (stages s1-s3). Faithful to the released code by default
(docs/methods.md, 'VisionDrop'); every switch below is an ablation or a named clean option."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from visiondrop.encoder_stage import dominant_contextual
from visiondrop.merging import ascending_split, contextual_merge
from visiondrop.methods.base import Method, check_count_basis, check_positions, scale_pair
from visiondrop.models import Geometry
from visiondrop.reduction import Reduction, Reductions, UnitTokens
from visiondrop.scoring import attention_to_columns, llm_query_key, take_rows, visual_attention


@dataclass
class EncoderOptions:
    """Stage s0 at the CLIP output: `dominant` counts the CLS token (official --dominant/--contextual)."""

    enabled: bool = True
    dominant: int = 42
    contextual: int = 6


@dataclass
class LLMOptions:
    """Stages inside the LLM (official --layer_list / --image_token_list)."""

    enabled: bool = True
    layers: list[int] = field(default_factory=lambda: [8, 16, 24])
    tokens: list[list[int]] = field(default_factory=lambda: [[30, 5], [22, 4], [16, 3]])
    per_sub_image: bool = False  # true: `tokens` pairs are per sub-image, a sample keeps n_sub x each (NeXT)
    scoring: str = "visual"  # visual: all visual queries (VisionDrop); text: last instruction token (PDrop-style)
    divisor: str = "all"  # VD-2 clean option "visible": key j's score divided by the N - j queries that see it
    positions: str = "compact"  # VD-8 clean option "original": kept tokens keep their positions (FastV style)

    def __post_init__(self):
        if self.scoring not in ("visual", "text"):
            raise ValueError(f"llm.scoring={self.scoring!r}: expected 'visual' or 'text'")
        if self.divisor not in ("all", "visible"):
            raise ValueError(f"llm.divisor={self.divisor!r}: expected 'all' (faithful) or 'visible'")
        check_positions(self.positions, "llm.positions")
        if len(self.tokens) != len(self.layers):
            raise ValueError(f"llm.tokens has {len(self.tokens)} [dominant, contextual] pairs for "
                             f"{len(self.layers)} llm.layers")
        if any(len(p) != 2 or min(p) < 0 for p in self.tokens):
            raise ValueError(f"llm.tokens: every entry must be [dominant, contextual] >= 0, got {self.tokens}")
        if sorted(set(self.layers)) != list(self.layers) or (self.layers and self.layers[0] < 1):
            raise ValueError(f"llm.layers must be strictly increasing layer numbers >= 1, got {self.layers}")


@dataclass
class VisionDropOptions:
    encoder: EncoderOptions = field(default_factory=EncoderOptions)
    llm: LLMOptions = field(default_factory=LLMOptions)
    merge: bool = True  # false: contextual budgets go to dominant tokens (pure top-k), the Fig. 6 ablation
    fusion: str = "target_plus_mean"  # VD-6 clean option: size_weighted
    count_basis: int | None = None  # counts written for an image of this many tokens, scaled per image (Qwen2.5-VL)

    def __post_init__(self):
        if self.fusion not in ("target_plus_mean", "size_weighted"):
            raise ValueError(f"fusion={self.fusion!r}: expected 'target_plus_mean' or 'size_weighted'")
        check_count_basis(self.count_basis)


class VisionDrop(Method):
    name = "visiondrop"
    title = "VisionDrop"
    Options = VisionDropOptions
    has_encoder_stage = True
    scores_without_cls = True

    def __init__(self, options: VisionDropOptions):
        super().__init__(options)
        self.has_encoder_stage = options.encoder.enabled
        self.boundaries = tuple(options.llm.layers) if options.llm.enabled else ()
        self.compact_positions = options.llm.positions == "compact"
        self.selection_queries = "visual" if options.llm.scoring == "visual" else 1

    def _split(self, dominant: int, contextual: int) -> tuple[int, int]:
        return (dominant, contextual) if self.options.merge else (dominant + contextual, 0)

    def _encoder_split(self, n_tokens: int) -> tuple[int, int]:
        """(dominant incl. CLS, contextual) tokens leaving the encoder stage for a unit of `n_tokens` tower tokens
        (the counts scale with it under `count_basis`)."""
        enc = self.options.encoder
        return self._split(*scale_pair(enc.dominant, enc.contextual, n_tokens, self.options.count_basis))

    def _llm_pair(self, stage: int, units: int, n_entering: int) -> tuple[int, int]:
        """(dominant, contextual) kept at `stage` (1-based) by a sample of `units` units that entered the LLM with
        `n_entering` visual tokens (under `count_basis` the pair scales with n_entering against the nominal
        image's entering count: the encoder's dominant + contextual, or count_basis without an encoder stage)."""
        d, c = self.options.llm.tokens[stage - 1]
        scale = units if self.options.llm.per_sub_image else 1
        enc, basis = self.options.encoder, self.options.count_basis
        nominal = None if basis is None else (enc.dominant + enc.contextual if enc.enabled else basis)
        return self._split(*scale_pair(d * scale, c * scale, n_entering, nominal))

    def tower_tokens(self, geometry: Geometry) -> int:
        enc = self.options.encoder
        if not enc.enabled:
            return geometry.visual_tokens
        limit = geometry.tower_tokens_per_unit
        kept = sum(self._encoder_split(limit))
        if enc.dominant < 1 or kept > limit:
            raise ValueError(f"encoder.dominant={enc.dominant} + encoder.contextual={enc.contextual} must be "
                             f">= 1 and at most the {limit} tower tokens (CLS + patches)")
        return geometry.units * kept

    def stage_counts(self, n_in: int, units: int = 1) -> list[int]:
        counts, current = [], n_in
        for k in range(len(self.options.llm.tokens)):
            d, c = self._llm_pair(k + 1, units, n_in)
            if d + c > current:
                raise ValueError(f"llm.tokens[{k}] = {self.options.llm.tokens[k]} keeps {d + c} tokens but the "
                                 f"stage receives only {current}")
            current = d + c
            counts.append(current)
        return counts

    def reduce_encoder(self, layer, layer_input, features, run) -> UnitTokens:
        """Stage s0 over every unit at once; replayed from a CUDA graph when units x tower tokens fit the execution
        layer's `graph_max_tokens` (static shapes: the tower's). A tower without CLS gives one view per image (its
        own rotary tables, not in a graph's key): its stage runs eagerly."""
        d, c = self._encoder_split(features.shape[1])
        fn = functools.partial(dominant_contextual, layer=layer, dominant=d, contextual=c, fusion=self.options.fusion,
                               fused=run.fused(layer_input, layer.head_dim))
        if not layer.has_cls:
            return UnitTokens(*fn(layer_input, features), dominant=d)
        key = ("encoder", tuple(layer_input.shape), layer_input.dtype, layer_input.device, d, c)
        return UnitTokens(*run.run(key, fn, layer_input, features), dominant=d)

    def begin_prefill(self, batch) -> list[int]:
        """The visual counts entering the LLM per row (what `count_basis` scales the LLM stages by)."""
        return batch.visual_len.tolist()

    def reduce(self, stage, batch, layer, rope, state, run) -> Reductions:
        """One batched pass when every row has the same visual count and budget (the common case), else per
        sample; text-only samples are never pruned."""
        cos, sin = rope
        n_vis = batch.visual_len.tolist()
        entering = n_vis if state is None else state
        pairs = [self._llm_pair(stage, u, n0) if n else None
                 for n, u, n0 in zip(n_vis, batch.units.tolist(), entering)]
        for b, (n, pair) in enumerate(zip(n_vis, pairs)):
            if pair is not None and sum(pair) > n:
                raise ValueError(f"stage {stage} keeps {sum(pair)} visual tokens but sample {b} has only {n}")
        starts, lengths = batch.visual_start.tolist(), batch.lengths.tolist()
        lasts = [n - 1 for n in lengths]
        if len(set(n_vis)) == 1 and len(set(pairs)) == 1 and pairs[0] is not None:
            return Reductions(shared=self._reduce_rows(batch.hidden, cos, sin, starts, lasts, n_vis[0], layer, run,
                                                       *pairs[0]))
        out = []
        for b, (n, pair) in enumerate(zip(n_vis, pairs)):
            rows = slice(b, b + 1), slice(0, lengths[b])
            out.append(None if pair is None else self._reduce_rows(
                batch.hidden[rows], cos[rows], sin[rows], starts[b:b + 1], lasts[b:b + 1], n, layer, run,
                *pair).split()[0])
        return Reductions(rows=out)

    def _reduce_rows(self, hidden, cos, sin, starts, lasts, n_vis, layer, run, d, c) -> Reduction:
        """Score, select and merge the visual segments [start, start + n_vis) of every row of `hidden`
        (`starts`, `lasts`: lists of each row's segment start and last real index)."""
        opts = self.options.llm
        first = starts[0]
        if opts.scoring == "visual" and all(s == first for s in starts):
            # One shared span (the usual case): only the prefix up to the span's end matters (visual queries
            # never see later tokens), so the work has static shapes and small inputs can replay a CUDA graph.
            end = first + n_vis
            inputs = (hidden[:, :end], cos[:, :end], sin[:, :end])
            fn = functools.partial(self._reduce_span, first=first, layer=layer, d=d, c=c,
                                   fused=run.fused(hidden, layer.head_dim), memory_mib=run.options.score_memory_mib)
            key = (layer.index, tuple(inputs[0].shape), hidden.dtype, hidden.device, first, d, c)
            return Reduction(*run.run(key, fn, *inputs))
        # Text-guided scoring, or rows whose spans differ: per-row indices.
        visual = torch.tensor(starts, device=hidden.device)[:, None] + torch.arange(n_vis, device=hidden.device)
        rows = visual if opts.scoring == "visual" else torch.tensor(lasts, device=hidden.device)[:, None]
        q, k = llm_query_key(hidden, layer, cos, sin, rows)
        scores = self._rescale(attention_to_columns(q, k, rows, visual, run.options.score_memory_mib))
        return Reduction(*self._select_and_merge(take_rows(hidden, visual), take_rows(k, visual), scores, d, c))

    def _reduce_span(self, hidden, cos, sin, first, layer, d, c, fused, memory_mib) -> tuple[torch.Tensor, ...]:
        """Visual-only reduction of rows whose visual span is [first, end of `hidden`); `fused`: Triton kernels
        (norm, RoPE, score, selection and merging; segments of at most MAX_SELECT_TOKENS)."""
        q, k = llm_query_key(hidden, layer, cos, sin, slice(first, None), fused)
        if fused:
            from visiondrop import kernels, selection_kernels

            if hidden.shape[1] - first <= selection_kernels.MAX_SELECT_TOKENS:
                return selection_kernels.select_and_merge(
                    kernels.visual_attention_parts(q, k, first), hidden[:, first:], k[:, first:], d, c,
                    self.options.fusion, visible=self.options.llm.divisor == "visible")
            scores = self._rescale(kernels.visual_attention_scores(q, k, first))
        else:
            scores = self._rescale(visual_attention(q, k, first, memory_mib))
        return self._select_and_merge(hidden[:, first:], k[:, first:], scores, d, c)
    def _rescale(self, scores: torch.Tensor) -> torch.Tensor:
        """The VD-2 clean option: divide key j's score by the N - j visual queries that see it."""
        if self.options.llm.divisor == "all" or self.options.llm.scoring != "visual":
            return scores
        n = scores.shape[-1]
        return scores * (n / torch.arange(n, 0, -1, device=scores.device)).to(scores.dtype)

    def _select_and_merge(self, segment, keys, scores, d, c) -> tuple[torch.Tensor, ...]:
        """Dominant tokens (top-d scores, ascending) and the rest merged into c contextual tokens by the
        similarity of their post-RoPE keys (head mean). Returns (keep, merged, merged_index) of a Reduction."""
        n_vis = segment.shape[-2]
        dom, rest = ascending_split(n_vis, torch.topk(scores, d, dim=-1, sorted=False).indices)  # the set only
        merged, targets = contextual_merge(segment, keys.mean(dim=-2), c, self.options.fusion, rest=rest)
        return dom, merged, rest[:, targets]
