"""Analytic FLOPs and KV-cache calculator following docs/efficiency.md, 'Protocol' (FLOPs = 2 x MACs)."""

from __future__ import annotations

import argparse
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LLMShape:
    """Decoder-only LLM shape (Llama family: SwiGLU MLP, optional GQA)."""

    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    vocab: int

    @property
    def head_dim(self) -> int:
        """Per-head width."""
        return self.hidden // self.heads

    @property
    def linear_macs_per_token(self) -> int:
        """MACs of q/k/v/o and the three MLP projections for one token in one layer."""
        kv_dim = self.kv_heads * self.head_dim
        return 2 * self.hidden * self.hidden + 2 * self.hidden * kv_dim + 3 * self.hidden * self.ffn


@dataclass(frozen=True)
class VisionShape:
    """ViT shape; tokens include CLS (`cls`; Qwen2.5-VL's tower has none: tokens are its patches), patch_pixels is
    the patch-embedding conv fan-in. `frames` > 0: every layer also attends across that many frames per token
    position (LanguageBind's temporal attention, Video-LLaVA). `gated_mlp`: a SwiGLU MLP (three ffn matrices, not
    two). `window` > 0: every layer outside `full_layers` attends within windows of that many tokens (Qwen2.5-VL:
    8 x 8 patches; an image that tiles into whole windows), the `full_layers` ones over all tokens."""

    layers: int
    width: int
    ffn: int
    tokens: int
    patch_pixels: int = 14 * 14 * 3
    frames: int = 0
    cls: bool = True
    gated_mlp: bool = False
    window: int = 0
    full_layers: int = 0


@dataclass(frozen=True)
class ProjectorShape:
    """MLP projector: in_width -> mid_width, (n_linears - 2) mid_width -> mid_width, mid_width -> out_width
    (one linear: in_width -> out_width). `mid_width` defaults to out_width (LLaVA's mlp2x_gelu); Qwen2.5-VL's
    PatchMerger keeps its input width (4 x 1280) in the middle."""

    in_width: int
    out_width: int
    n_linears: int = 2
    mid_width: int | None = None

    @property
    def macs_per_token(self) -> int:
        """MACs per projected token."""
        if self.n_linears == 1:
            return self.in_width * self.out_width
        mid = self.mid_width or self.out_width
        return self.in_width * mid + (self.n_linears - 2) * mid * mid + mid * self.out_width


def llm_shape(llm_config: Any) -> LLMShape:
    """The LLM shape of a LlamaConfig-like object (Qwen2's text config too)."""
    return LLMShape(
        layers=llm_config.num_hidden_layers,
        hidden=llm_config.hidden_size,
        ffn=llm_config.intermediate_size,
        heads=llm_config.num_attention_heads,
        kv_heads=getattr(llm_config, "num_key_value_heads", None) or llm_config.num_attention_heads,
        vocab=llm_config.vocab_size,
    )


def from_configs(
    llm_config: Any, vision_config: Any, projector_type: str = "mlp2x_gelu", frames: int = 0
) -> tuple[LLMShape, VisionShape, ProjectorShape]:
    """Build shapes from LlamaConfig- and CLIPVisionConfig-like objects (`frames`: temporal attention, see
    VisionShape)."""
    llm = llm_shape(llm_config)
    patch = vision_config.patch_size
    vision = VisionShape(
        layers=vision_config.num_hidden_layers,
        width=vision_config.hidden_size,
        ffn=vision_config.intermediate_size,
        tokens=(vision_config.image_size // patch) ** 2 + 1,
        patch_pixels=patch * patch * getattr(vision_config, "num_channels", 3),
        frames=frames,
    )
    if projector_type == "linear":
        n_linears = 1
    elif m := re.fullmatch(r"mlp(\d+)x_gelu", projector_type):
        n_linears = int(m.group(1))
    else:
        raise ValueError(f"unknown projector type {projector_type!r}")
    return llm, vision, ProjectorShape(vision.width, llm.hidden, n_linears)


def from_qwen_config(config: Any, patches: int) -> tuple[LLMShape, VisionShape, ProjectorShape]:
    """Shapes of a Qwen2.5-VL config (`text_config`, `vision_config`) for an image of `patches` patches: the
    vision transformer (SwiGLU, windows of (window_size / patch_size)^2 patches outside the full-attention blocks)
    and the PatchMerger (merge^2 x width -> merge^2 x width -> LLM width) as the projector."""
    v = config.vision_config
    side = v.window_size // v.patch_size
    vision = VisionShape(layers=v.depth, width=v.hidden_size, ffn=v.intermediate_size, tokens=patches,
                         patch_pixels=v.in_channels * v.temporal_patch_size * v.patch_size**2, cls=False,
                         gated_mlp=True, window=side * side, full_layers=len(v.fullatt_block_indexes))
    merged = v.spatial_merge_size**2 * v.hidden_size
    return llm_shape(config.text_config), vision, ProjectorShape(merged, v.out_hidden_size, mid_width=merged)


def vision_macs(vision: VisionShape) -> int:
    """MACs of one ViT forward over one crop or frame (all layers + patch-embedding conv). With `frames`, each
    layer's temporal attention adds, per frame, q/k/v/o over its n tokens and n scores + weighted sums over the
    frames (4 n w^2 + 2 n T w; the per-layer temporal embedding and layer norm are not counted, as no norm is).
    Windowed layers attend over `window` tokens instead of n (2 n window w)."""
    n, w, t = vision.tokens, vision.width, vision.frames
    dense = 4 * n * w * w + (3 if vision.gated_mlp else 2) * n * w * vision.ffn
    if t:
        dense += 4 * n * w * w + 2 * n * t * w
    full = vision.layers if not vision.window else vision.full_layers
    attention = full * 2 * n * n * w + (vision.layers - full) * 2 * n * vision.window * w
    return vision.layers * dense + attention + (n - int(vision.cls)) * vision.patch_pixels * w


def llm_layer_macs(llm: LLMShape, n: int) -> int:
    """MACs of one decoder layer over n tokens, attention counted dense."""
    return n * llm.linear_macs_per_token + 2 * n * n * llm.heads * llm.head_dim


def selection_macs(llm: LLMShape, n_seq: int, n_queries: int) -> int:
    """MACs of one scoring boundary: q and k over n_seq tokens plus n_queries x n_seq scores."""
    q_dim, kv_dim = llm.heads * llm.head_dim, llm.kv_heads * llm.head_dim
    return n_seq * llm.hidden * (q_dim + kv_dim) + n_queries * n_seq * q_dim


def per_layer_counts(schedule: Sequence[tuple[int, int]], layers: int = 32) -> list[int]:
    """Expand (first_layer, count) stage starts into per-layer counts n_l."""
    stages = sorted(schedule)
    if not stages or stages[0][0] != 0:
        raise ValueError("schedule must start at layer 0")
    ends = [s[0] for s in stages[1:]] + [layers]
    counts: list[int] = []
    for (start, count), end in zip(stages, ends, strict=True):
        if end <= start or end > layers:
            raise ValueError(f"bad stage boundaries in {schedule}")
        counts += [count] * (end - start)
    return counts


def average_budget(counts: Sequence[int]) -> float:
    """Token budget B = mean visual tokens over decoder layers."""
    return sum(counts) / len(counts)


def boundary_selection(
    text_tokens: int, visual_per_layer: Sequence[int], queries: int | str = "visual"
) -> list[tuple[int, int]]:
    """(n_seq, n_queries) wherever the visual count drops; queries='visual' scores with all visual tokens."""
    out = []
    for prev, cur in itertools.pairwise(visual_per_layer):
        if cur != prev:
            out.append((text_tokens + prev, prev if queries == "visual" else int(queries)))
    return out


def flops_report(
    llm: LLMShape,
    vision: VisionShape,
    projector: ProjectorShape,
    text_tokens: int,
    visual_per_layer: list[int],
    n_crops: int = 1,
    projected_tokens: int | None = None,
    lm_head_positions: int | str = "all",
    selection: Sequence[tuple[int, int]] = (),
) -> dict[str, float]:
    """Prefill FLOPs per component (vision, projector, llm, selection, lm_head, total), 2 x MACs."""
    if len(visual_per_layer) != llm.layers:
        raise ValueError(f"need {llm.layers} per-layer counts, got {len(visual_per_layer)}")
    if projected_tokens is None:
        projected_tokens = min(visual_per_layer[0], n_crops * (vision.tokens - int(vision.cls)))
    n_head = text_tokens + visual_per_layer[-1] if lm_head_positions == "all" else int(lm_head_positions)
    macs = {
        "vision": n_crops * vision_macs(vision),
        "projector": projected_tokens * projector.macs_per_token,
        "llm": sum(llm_layer_macs(llm, text_tokens + v) for v in visual_per_layer),
        "selection": sum(selection_macs(llm, n_seq, nq) for n_seq, nq in selection),
        "lm_head": n_head * llm.hidden * llm.vocab,
    }
    report = {k: 2.0 * v for k, v in macs.items()}
    report["total"] = sum(report.values())
    return report


def decode_flops_per_token(llm: LLMShape, context_per_layer: list[int]) -> float:
    """FLOPs of one decode step attending to context_per_layer[l] cached tokens in layer l."""
    macs = llm.layers * llm.linear_macs_per_token + llm.hidden * llm.vocab
    macs += sum(2 * llm.heads * llm.head_dim * n for n in context_per_layer)
    return 2.0 * macs


def kv_cache_bytes(
    llm: LLMShape, tokens_per_layer: list[int], batch: int = 1, bytes_per_elem: int = 2
) -> int:
    """KV-cache size: sum over layers of tokens x 2 (K, V) x kv_heads x head_dim x bytes."""
    return batch * sum(tokens_per_layer) * 2 * llm.kv_heads * llm.head_dim * bytes_per_elem


def _parse_counts(spec: str) -> list[int]:
    """Parse '96x8,70x8' into per-layer counts."""
    counts: list[int] = []
    for part in spec.split(","):
        value, _, times = part.partition("x")
        counts += [int(value)] * int(times or 1)
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: print a Markdown FLOPs table for one configuration."""
    from visiondrop.models import MODELS, model_spec  # the table imports this module's shapes

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="llava-v1.5-7b", help=f"a model table name: {', '.join(MODELS)}")
    ap.add_argument("--counts", required=True, help="per-layer visual counts, e.g. 96x8,70x8,52x8,38x8")
    ap.add_argument("--text-tokens", type=int, default=64)
    ap.add_argument("--projected", type=int, default=None, help="tokens through the projector")
    ap.add_argument("--lm-head", default="all", help="'all' prompt positions or a number")
    ap.add_argument(
        "--selection", choices=["visual", "one", "none"], default="visual",
        help="queries per boundary: all visual tokens (VisionDrop), one (PDrop), none (FastV, flat)",
    )
    args = ap.parse_args(argv)
    try:
        spec = model_spec(args.model)
    except ValueError as err:
        ap.error(f"--model: {err}")
    llm, vision, proj = spec.llm, spec.vision, spec.projector
    counts = _parse_counts(args.counts)
    sel = [] if args.selection == "none" else boundary_selection(
        args.text_tokens, counts, "visual" if args.selection == "visual" else 1
    )
    rep = flops_report(
        llm, vision, proj, args.text_tokens, counts, n_crops=spec.geometry.units,
        projected_tokens=args.projected, lm_head_positions=args.lm_head, selection=sel,
    )
    kv = kv_cache_bytes(llm, [args.text_tokens + c for c in counts]) / 2**20
    keys = ["vision", "projector", "llm", "selection", "lm_head", "total"]
    print("| model | avg visual | " + " | ".join(f"{k} (T)" for k in keys) + " | KV (MiB) |")
    print("|---" * (len(keys) + 3) + "|")
    cells = " | ".join(f"{rep[k] / 1e12:.3f}" for k in keys)
    print(f"| {args.model} | {average_budget(counts):.1f} | {cells} | {kv:.0f} |")


if __name__ == "__main__":
    main()
