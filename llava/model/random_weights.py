"""Random-weights LLaVA models of real shapes, built directly on the device (no download): efficiency runs.

A shape is named as in the model table (visiondrop/models.py), which gives its module shapes: `llava-v1.5-7b`
(Vicuna-7B + CLIP ViT-L/14-336 + mlp2x_gelu) and `llava-next-7b` (llava-v1.6-vicuna-7b: the same
modules plus the v1.6 anyres fields and `image_newline`) and `video-llava-7b` (Vicuna-7B + mlp2x_gelu over
LanguageBind's ViT-L/14-224 towers: the video tower with its temporal attention, 8 frames, and the image tower)
and `qwen2.5-vl-7b` (Qwen2-7B's 28 GQA layers + the 32-block vision transformer and its PatchMerger).
Their tiny variants (`tiny-llava-v1.5-7b`, `tiny-llava-next-7b`, `tiny-video-llava-7b`, `tiny-qwen2.5-vl-7b`;
llava.model.tiny, llava.model.tiny_qwen) keep the depth and token geometry with the tiny test models' widths. The
image tower is built from `vision_tower_config` inside the model; Video-LLaVA's video tower from the same fields.
The Qwen2.5-VL shapes are written once as a checkpoint in the Qwen2.5-VL layout (`random_qwen_path`) and loaded by
the family's own loader, as a real checkpoint would be.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, Qwen2_5_VLForConditionalGeneration

from llava.model.builder import build_model, materialize_random
from llava.model.language_model.llava_llama import LlavaConfig
from llava.model.language_model.video_llava import video_model_class
from llava.model.tiny import NEXT_PINPOINTS, TINY_CLIP, TINY_LLM, build_once, default_cache_dir, tiny_variant
from llava.model.tiny_qwen import (
    TINY_QWEN_TEXT,
    TINY_QWEN_VISION,
    qwen_checkpoint_config,
    save_qwen_checkpoint,
    tiny_qwen_processors,
)
from llava.model.visiondrop_llava import PruningCLIPVisionTower, PruningVideoTower, VisionDropLlavaForCausalLM
from visiondrop.flops import LLMShape, VisionShape
from visiondrop.models import FORMER_NAMES, model_spec

# the table entries with a benchmark reference config
BASES = ("llava-v1.5-7b", "llava-next-7b", "video-llava-7b", "qwen2.5-vl-7b")
SHAPES = (*BASES, *map(tiny_variant, BASES))
NEXT_SHAPES = tuple(s for s in SHAPES if s.endswith("llava-next-7b"))
VIDEO_SHAPES = tuple(s for s in SHAPES if s.endswith("video-llava-7b"))
QWEN_SHAPES = tuple(s for s in SHAPES if s.endswith("qwen2.5-vl-7b"))
RANDOM_QWEN_VERSION = 1
# Spellings of the shapes before the model table, for an error naming the new one.
FORMER_SHAPES = {**FORMER_NAMES, "tiny": tiny_variant("llava-v1.5-7b"),
                 "tiny-next": tiny_variant("llava-next-7b")}
MERGE_TYPES = ("flat", "spatial_unpad")
# What the table's shapes leave out (no FLOPs depend on it): Vicuna's norm / RoPE fields, CLIP-L's heads and patch.
LLAMA_FIELDS = dict(max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0)
CLIP_FIELDS = dict(num_attention_heads=16, patch_size=14)
# llava-v1.6-vicuna-7b's anyres fields (the model is built with spatial_unpad so that it holds image_newline).
NEXT_FIELDS = dict(image_aspect_ratio="anyres", image_grid_pinpoints=NEXT_PINPOINTS,
                   mm_patch_merge_type="spatial_unpad", tokenizer_model_max_length=4096)
# Qwen2.5-VL-7B-Instruct's fields the table leaves out: M-RoPE sections, norm, context; the vision transformer's
# heads, patching, windows and full-attention blocks; its processor's pixel bounds (a 1344 x 1008 image stays whole).
QWEN_TEXT_FIELDS = dict(max_position_embeddings=128000, rms_norm_eps=1e-6,
                        rope_parameters=dict(rope_type="default", rope_theta=1000000.0, mrope_section=[16, 24, 24]))
QWEN_VISION_FIELDS = dict(num_heads=16, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                          fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2)
QWEN_MIN_PIXELS, QWEN_MAX_PIXELS = 56 * 56, 28 * 28 * 16384


def table_model(shape: str) -> str:
    """The model table entry of a random-weights shape (a tiny variant: the entry it shrinks)."""
    return shape.removeprefix(tiny_variant(""))


def shapes(shape: str) -> tuple[LLMShape, VisionShape]:
    """The LLM and tower shapes of a random-weights shape name (a tiny variant: the tiny widths)."""
    if shape in FORMER_SHAPES:
        raise ValueError(f"random-weights shape {shape!r} is now spelled {FORMER_SHAPES[shape]!r}")
    if shape not in SHAPES:
        raise ValueError(f"unknown random-weights shape {shape!r} (known: {', '.join(SHAPES)})")
    spec = model_spec(table_model(shape))
    if shape in BASES:
        return spec.llm, spec.vision
    if shape in QWEN_SHAPES:
        text, vision = TINY_QWEN_TEXT, TINY_QWEN_VISION
        llm = replace(spec.llm, hidden=text["hidden_size"], ffn=text["intermediate_size"],
                      heads=text["num_attention_heads"], kv_heads=text["num_key_value_heads"])
        return llm, replace(spec.vision, width=vision["hidden_size"], ffn=vision["intermediate_size"])
    llm = replace(spec.llm, hidden=TINY_LLM["hidden_size"], ffn=TINY_LLM["intermediate_size"],
                  heads=TINY_LLM["num_attention_heads"], kv_heads=TINY_LLM["num_key_value_heads"])
    return llm, replace(spec.vision, width=TINY_CLIP["hidden_size"], ffn=TINY_CLIP["intermediate_size"])


def _llm_fields(llm: LLMShape) -> dict:
    return dict(hidden_size=llm.hidden, intermediate_size=llm.ffn, num_hidden_layers=llm.layers,
                num_attention_heads=llm.heads, num_key_value_heads=llm.kv_heads, vocab_size=llm.vocab, **LLAMA_FIELDS)


def _tower_fields(vision: VisionShape, tiny: bool) -> dict:
    patch = CLIP_FIELDS["patch_size"]
    side = round((vision.tokens - 1) ** 0.5) * patch
    heads = TINY_CLIP["num_attention_heads"] if tiny else CLIP_FIELDS["num_attention_heads"]
    return dict(hidden_size=vision.width, intermediate_size=vision.ffn, num_hidden_layers=vision.layers,
                num_attention_heads=heads, image_size=side, patch_size=patch)


def random_llava_config(shape: str, attn: str = "sdpa") -> LlavaConfig:
    """LLaVA-1.5- or NeXT-style config of the named shape with the CLIP tower held in the config."""
    llm, vision = shapes(shape)
    clip = _tower_fields(vision, shape not in BASES)
    extra = NEXT_FIELDS if shape in NEXT_SHAPES else dict(image_aspect_ratio="pad")
    config = LlavaConfig(
        **_llm_fields(llm), bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
        mm_hidden_size=clip["hidden_size"], mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2,
        mm_vision_select_feature="patch", unfreeze_mm_vision_tower=True, vision_tower_config=clip, **extra,
    )
    config._attn_implementation = attn
    return config


def random_llava(shape: str, dtype: torch.dtype, device: str | torch.device, attn: str = "sdpa",
                 vision_dtype: torch.dtype | None = None, seed: int = 0,
                 merge_type: str | None = None) -> VisionDropLlavaForCausalLM:
    """A pruning-aware LLaVA of the named shape with random weights, materialised on `device`.

    NeXT shapes merge their sub-images per `merge_type` (default `flat`: 5 x 576 = 2880 tokens on a 2x2 grid)."""
    if merge_type is not None and merge_type not in MERGE_TYPES:
        raise ValueError(f"merge_type {merge_type!r}: expected one of {', '.join(MERGE_TYPES)}")
    if merge_type is not None and shape not in NEXT_SHAPES:
        raise ValueError(f"merge_type applies to the NeXT shapes ({', '.join(NEXT_SHAPES)}), not {shape!r}")
    torch.manual_seed(seed)
    config = random_llava_config(shape, attn)
    video = shape in VIDEO_SHAPES
    model_cls = video_model_class(VisionDropLlavaForCausalLM) if video else VisionDropLlavaForCausalLM
    model = build_model(config, dtype, device, None, None, PruningCLIPVisionTower, vision_dtype, model_cls)
    if shape in NEXT_SHAPES:
        model.config.mm_patch_merge_type = merge_type or "flat"
    if video:  # the video tower: the image tower's shape plus random (non-zero) temporal modules
        frames = shapes(shape)[1].frames
        with torch.device("meta"):
            tower = PruningVideoTower(CLIPVisionConfig(**config.vision_tower_config), frames, temporal=True,
                                      select_layer=config.mm_vision_select_layer)
        model.video_tower = materialize_random(tower, vision_dtype or dtype, device).eval()
    return model


def random_qwen_path(shape: str, device: str | torch.device, seed: int = 0) -> Path:
    """The checkpoint directory of a Qwen2.5-VL random-weights shape (under $VISIONDROP_CACHE), written on first use:
    weights drawn on `device` (a GPU draws 8B values in well under a second) and saved in bf16, the real
    checkpoint's dtype, with its config, the tiny byte-level tokenizer (Qwen's special tokens and chat layout) and
    an image processor with the real pixel bounds."""
    if shape not in QWEN_SHAPES:
        raise ValueError(f"{shape!r} is not a Qwen2.5-VL shape ({', '.join(QWEN_SHAPES)})")
    root = default_cache_dir() / f"random-{shape}-v{RANDOM_QWEN_VERSION}"
    return build_once(root, lambda out: _write_random_qwen(out, shape, device, seed))


def _write_random_qwen(out: Path, shape: str, device: str | torch.device, seed: int) -> None:
    llm, vision = shapes(shape)
    tiny = shape != table_model(shape)
    text = dict(TINY_QWEN_TEXT if tiny else QWEN_TEXT_FIELDS, hidden_size=llm.hidden, intermediate_size=llm.ffn,
                num_hidden_layers=llm.layers, num_attention_heads=llm.heads, num_key_value_heads=llm.kv_heads,
                vocab_size=llm.vocab)
    tower = dict(TINY_QWEN_VISION if tiny else QWEN_VISION_FIELDS, depth=vision.layers, hidden_size=vision.width,
                 intermediate_size=vision.ffn)
    tokenizer, image_processor = tiny_qwen_processors(QWEN_MIN_PIXELS, QWEN_MAX_PIXELS)
    config = qwen_checkpoint_config(text, tower, tokenizer)
    config.tie_word_embeddings = False
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    model = materialize_random(model, torch.bfloat16, device)
    save_qwen_checkpoint(out, model, tokenizer, image_processor,
                         f"Random weights of the {shape} shapes (efficiency benchmark). Not a real model.")


def is_anyres(config) -> bool:
    """Whether a model config describes LLaVA-NeXT (anyres sub-images)."""
    return getattr(config, "image_aspect_ratio", None) == "anyres"
