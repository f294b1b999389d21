"""Random-weights LLaVA models of real shapes, built directly on the device (no download): efficiency runs.

A shape is named as in the model table (visiondrop/models.py), which gives its module shapes: `llava-v1.5-7b`
(Vicuna-7B + CLIP ViT-L/14-336 + mlp2x_gelu) and `llava-next-7b` (llava-v1.6-vicuna-7b: the same
modules plus the v1.6 anyres fields and `image_newline`) and `video-llava-7b` (Vicuna-7B + mlp2x_gelu over
LanguageBind's ViT-L/14-224 towers: the video tower with its temporal attention, 8 frames, and the image tower).
Their tiny variants (`tiny-llava-v1.5-7b`, `tiny-llava-next-7b`, `tiny-video-llava-7b`; llava.model.tiny) keep
the depth and token geometry with the tiny test model's widths. The image tower is built from
`vision_tower_config` inside the model; Video-LLaVA's video tower from the same fields.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from transformers import CLIPVisionConfig

from llava.model.builder import build_model, materialize_random
from llava.model.language_model.llava_llama import LlavaConfig
from llava.model.language_model.video_llava import video_model_class
from llava.model.tiny import NEXT_PINPOINTS, TINY_CLIP, TINY_LLM, tiny_variant
from llava.model.visiondrop_llava import PruningCLIPVisionTower, PruningVideoTower, VisionDropLlavaForCausalLM
from visiondrop.flops import LLMShape, VisionShape
from visiondrop.models import FORMER_NAMES, model_spec

BASES = ("llava-v1.5-7b", "llava-next-7b", "video-llava-7b")  # the table entries with a benchmark reference config
SHAPES = (*BASES, *map(tiny_variant, BASES))
NEXT_SHAPES = tuple(s for s in SHAPES if s.endswith("llava-next-7b"))
VIDEO_SHAPES = tuple(s for s in SHAPES if s.endswith("video-llava-7b"))
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


def is_anyres(config) -> bool:
    """Whether a model config describes LLaVA-NeXT (anyres sub-images)."""
    return getattr(config, "image_aspect_ratio", None) == "anyres"
