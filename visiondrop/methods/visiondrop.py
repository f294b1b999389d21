"""VisionDrop: visual-only importance, dominant selection and contextual merging, at the vision-encoder
output (stage s0) and before LLM layers 8/16/24 (stages s1-s3). Faithful to the released code by default
(methods spec §1); every switch below is an ablation or a named clean option."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from visiondrop.encoder_stage import dominant_contextual
from visiondrop.merging import complement, contextual_merge, top_indices_ascending
from visiondrop.methods.base import Method
from visiondrop.reduction import Reduction
from visiondrop.scoring import attention_to_columns, llm_query_key


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
    scoring: str = "visual"  # visual: all visual queries (VisionDrop); text: last instruction token (PDrop-style)
    chunk_size: int = 256  # visual queries per scoring chunk (bounds the extra memory)

    def __post_init__(self):
        if self.scoring not in ("visual", "text"):
            raise ValueError(f"llm.scoring={self.scoring!r}: expected 'visual' or 'text'")
        if len(self.tokens) != len(self.layers):
            raise ValueError(f"llm.tokens has {len(self.tokens)} [dominant, contextual] pairs for "
                             f"{len(self.layers)} llm.layers")
        if any(len(p) != 2 or min(p) < 0 for p in self.tokens):
            raise ValueError(f"llm.tokens: every entry must be [dominant, contextual] >= 0, got {self.tokens}")
        if sorted(set(self.layers)) != list(self.layers) or (self.layers and self.layers[0] < 1):
            raise ValueError(f"llm.layers must be strictly increasing layer numbers >= 1, got {self.layers}")
        if self.chunk_size < 1:
            raise ValueError("llm.chunk_size must be >= 1")


@dataclass
class VisionDropOptions:
    encoder: EncoderOptions = field(default_factory=EncoderOptions)
    llm: LLMOptions = field(default_factory=LLMOptions)
    merge: bool = True  # false: contextual budgets go to dominant tokens (pure top-k), the Fig. 6 ablation
    fusion: str = "target_plus_mean"  # VD-6 clean option: size_weighted

    def __post_init__(self):
        if self.fusion not in ("target_plus_mean", "size_weighted"):
            raise ValueError(f"fusion={self.fusion!r}: expected 'target_plus_mean' or 'size_weighted'")


class VisionDrop(Method):
    name = "visiondrop"
    Options = VisionDropOptions
    has_encoder_stage = True

    def __init__(self, options: VisionDropOptions):
        super().__init__(options)
        self.has_encoder_stage = options.encoder.enabled
        self.boundaries = tuple(options.llm.layers) if options.llm.enabled else ()

    def _split(self, dominant: int, contextual: int) -> tuple[int, int]:
        return (dominant, contextual) if self.options.merge else (dominant + contextual, 0)

    def tower_tokens(self, n_visual: int) -> int:
        enc = self.options.encoder
        if not enc.enabled:
            return n_visual
        if enc.dominant < 1 or enc.dominant + enc.contextual > n_visual + 1:
            raise ValueError(f"encoder.dominant={enc.dominant} + encoder.contextual={enc.contextual} must be "
                             f">= 1 and at most the {n_visual + 1} tower tokens (CLS + patches)")
        return enc.dominant + enc.contextual

    def stage_counts(self, n_in: int) -> list[int]:
        counts, current = [], n_in
        for k, (d, c) in enumerate(self.options.llm.tokens):
            if d + c > current:
                raise ValueError(f"llm.tokens[{k}] = [{d}, {c}] keeps {d + c} tokens but the stage receives "
                                 f"only {current}")
            current = d + c
            counts.append(current)
        return counts

    def reduce_encoder(self, layer_input, features, layer, select_feature):
        enc = self.options.encoder
        d, c = self._split(enc.dominant, enc.contextual)
        return dominant_contextual(layer_input, features, layer, d, c, self.options.fusion)

    def reduce(self, stage: int, layer_idx: int, batch, layer: nn.Module, rope: tuple) -> list[Reduction | None]:
        d, c = self._split(*self.options.llm.tokens[stage - 1])
        cos, sin = rope
        out = []
        for b in range(batch.hidden.shape[0]):
            n_vis = int(batch.visual_len[b])
            if n_vis == 0:
                out.append(None)  # text-only samples are never pruned
                continue
            if d + c > n_vis:
                raise ValueError(f"stage {stage} keeps {d + c} visual tokens but sample {b} has only {n_vis}")
            n_real, start = int(batch.lengths[b]), int(batch.visual_start[b])
            out.append(self._reduce_sample(batch.hidden[b, :n_real], cos[b, :n_real], sin[b, :n_real],
                                           start, n_vis, layer, d, c))
        return out

    def _reduce_sample(self, hidden, cos, sin, start, n_vis, layer, d, c) -> Reduction:
        opts = self.options.llm
        visual = slice(start, start + n_vis)
        if opts.scoring == "visual":
            rows = torch.arange(start, start + n_vis, device=hidden.device)
        else:
            rows = torch.tensor([hidden.shape[0] - 1], device=hidden.device)
        q, k = llm_query_key(hidden, layer, cos, sin, rows)
        scores = attention_to_columns(q, k, rows, visual, opts.chunk_size)
        dom = top_indices_ascending(scores, d)
        rest = complement(n_vis, dom)
        metric = k[visual].mean(dim=1)[rest]  # post-RoPE keys, head mean
        merged, targets = contextual_merge(hidden[visual][rest], metric, c, self.options.fusion)
        return Reduction(keep=dom, merged=merged, merged_index=rest[targets])
