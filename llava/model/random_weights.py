"""Random-weights LLaVA models of real shapes, built directly on the device (no download): efficiency runs.

`llava15-7b` is LLaVA-1.5-7B (Vicuna-7B + CLIP ViT-L/14-336 + mlp2x_gelu); `llava-next-7b` is LLaVA-NeXT-7B
(llava-v1.6-vicuna-7b: the same modules plus the v1.6 anyres fields and `image_newline`); `tiny` and `tiny-next`
have the tiny test model's shapes (same token geometry, tiny widths). The tower is built from
`vision_tower_config` inside the model.
"""

from __future__ import annotations

import torch

from llava.model.builder import build_model
from llava.model.language_model.llava_llama import LlavaConfig
from llava.model.tiny import NEXT_PINPOINTS, TINY_CLIP, TINY_LLM
from llava.model.visiondrop_llava import PruningCLIPVisionTower, VisionDropLlavaForCausalLM

VICUNA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0)
CLIP_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=336, patch_size=14)
TINY_TOWER = {k: v for k, v in TINY_CLIP.items() if k != "projection_dim"}
SHAPES = {
    "llava15-7b": (VICUNA_7B, CLIP_L_336),
    "llava-next-7b": (VICUNA_7B, CLIP_L_336),
    "tiny": (TINY_LLM, TINY_TOWER),
    "tiny-next": (TINY_LLM, TINY_TOWER),
}
NEXT_SHAPES = ("llava-next-7b", "tiny-next")
MERGE_TYPES = ("flat", "spatial_unpad")
# llava-v1.6-vicuna-7b's anyres fields (the model is built with spatial_unpad so that it holds image_newline).
NEXT_FIELDS = dict(image_aspect_ratio="anyres", image_grid_pinpoints=NEXT_PINPOINTS,
                   mm_patch_merge_type="spatial_unpad", tokenizer_model_max_length=4096)


def random_llava_config(shape: str, attn: str = "sdpa", vocab_size: int = 32000) -> LlavaConfig:
    """LLaVA-1.5- or NeXT-style config of the named shape with the CLIP tower held in the config."""
    if shape not in SHAPES:
        raise ValueError(f"unknown random-weights shape {shape!r} (known: {', '.join(SHAPES)})")
    llm, clip = SHAPES[shape]
    extra = NEXT_FIELDS if shape in NEXT_SHAPES else dict(image_aspect_ratio="pad")
    config = LlavaConfig(
        **llm, vocab_size=vocab_size, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
        mm_hidden_size=clip["hidden_size"], mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2,
        mm_vision_select_feature="patch", unfreeze_mm_vision_tower=True, vision_tower_config=dict(clip), **extra,
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
    model = build_model(config, dtype, device, None, None, PruningCLIPVisionTower, vision_dtype,
                        VisionDropLlavaForCausalLM)
    if shape in NEXT_SHAPES:
        model.config.mm_patch_merge_type = merge_type or "flat"
    return model


def is_anyres(config) -> bool:
    """Whether a model config describes LLaVA-NeXT (anyres sub-images)."""
    return getattr(config, "image_aspect_ratio", None) == "anyres"
