"""Analytic FLOPs and KV bytes of a measured run, from its per-layer visual counts (docs/efficiency.md, 'Protocol')."""

from __future__ import annotations

from visiondrop.config import PruningConfig
from visiondrop.flops import (
    LLMShape,
    ProjectorShape,
    VisionShape,
    boundary_selection,
    decode_flops_per_token,
    flops_report,
    kv_cache_bytes,
)
from visiondrop.methods import build_method

Shapes = tuple[LLMShape, VisionShape, ProjectorShape]


def selection_queries(config: PruningConfig) -> int | str | None:
    """Queries per LLM boundary as executed (the method's `selection_queries`): all visual (VisionDrop), one (PDrop;
    VisionDrop text scoring), or None where selection adds no counted FLOPs (FastV, SparseVLM reuse attention;
    encoder-only methods)."""
    return build_method(config).selection_queries


def analytic(shapes: Shapes, config: PruningConfig, text_tokens: int, counts: list[int], batch: int,
             bytes_per_elem: int, n_crops: int = 1, projected_tokens: int | None = None) -> dict:
    """FLOPs per sample (lm_head over all prompt positions, the paper's convention; and over the last position,
    as this implementation runs it), decode FLOPs per token and the analytic KV bytes of the whole batch.

    The ViT is counted `n_crops` times (NeXT: base + grid crops), the projector over `projected_tokens` per
    sample (None: the calculator's default, min(counts[0], n_crops x patches))."""
    llm, vision, projector = shapes
    queries = selection_queries(config)
    selection = boundary_selection(text_tokens, counts, queries) if queries is not None else []
    common = dict(n_crops=n_crops, projected_tokens=projected_tokens, selection=selection)
    flops = flops_report(llm, vision, projector, text_tokens, counts, **common)
    last = flops_report(llm, vision, projector, text_tokens, counts, lm_head_positions=1, **common)
    context = [text_tokens + n for n in counts]
    return {
        "flops_per_sample": flops,
        "flops_per_sample_lm_head_last": last["total"],
        "decode_flops_per_token": decode_flops_per_token(llm, context),
        "selection_queries": queries,
        "kv_analytic_bytes": kv_cache_bytes(llm, context, batch, bytes_per_elem),
    }
