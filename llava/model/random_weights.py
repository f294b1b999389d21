"""Random-weights LLaVA models of real shapes, built directly on the device (no download): efficiency runs.

`llava15-7b` is LLaVA-1.5-7B (Vicuna-7B + CLIP ViT-L/14-336 + mlp2x_gelu); `tiny` has the tiny test model's
shapes (same token geometry, tiny widths). The tower is built from `vision_tower_config` inside the model.
"""

from __future__ import annotations

import torch

from llava.model.builder import build_model
from llava.model.language_model.llava_llama import LlavaConfig
from llava.model.tiny import TINY_CLIP, TINY_LLM
from llava.model.visiondrop_llava import PruningCLIPVisionTower, VisionDropLlavaForCausalLM

VICUNA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0)
CLIP_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=336, patch_size=14)
SHAPES = {
    "llava15-7b": (VICUNA_7B, CLIP_L_336),
    "tiny": (TINY_LLM, {k: v for k, v in TINY_CLIP.items() if k != "projection_dim"}),
}


def random_llava_config(shape: str, attn: str = "sdpa", vocab_size: int = 32000) -> LlavaConfig:
    """LLaVA-1.5-style config of the named shape with the CLIP tower held in the config."""
    if shape not in SHAPES:
        raise ValueError(f"unknown random-weights shape {shape!r} (known: {', '.join(SHAPES)})")
    llm, clip = SHAPES[shape]
    config = LlavaConfig(
        **llm, vocab_size=vocab_size, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
        mm_hidden_size=clip["hidden_size"], mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2,
        mm_vision_select_feature="patch", image_aspect_ratio="pad", unfreeze_mm_vision_tower=True,
        vision_tower_config=dict(clip),
    )
    config._attn_implementation = attn
    return config


def random_llava(shape: str, dtype: torch.dtype, device: str | torch.device, attn: str = "sdpa",
                 vision_dtype: torch.dtype | None = None, seed: int = 0) -> VisionDropLlavaForCausalLM:
    """A pruning-aware LLaVA of the named shape with random weights, materialised on `device`."""
    torch.manual_seed(seed)
    config = random_llava_config(shape, attn)
    return build_model(config, dtype, device, None, None, PruningCLIPVisionTower, vision_dtype,
                       VisionDropLlavaForCausalLM)
