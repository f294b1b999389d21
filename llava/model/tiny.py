"""Tiny random LLaVA-1.5- and LLaVA-NeXT-shaped checkpoints in the original layout, created once and cached.

They keep the token geometry of the real models (336-px CLIP with 14-px patches = 576 patches + CLS, a
32-layer decoder, the 35-token-style prompt) with tiny widths, so every shipped config runs on it unchanged.
Tests and the README's demo use it where no real weights exist. Weights are random: outputs are not answers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

from llava.model.builder import save_checkpoint
from llava.model.checkpoint import read_state_dict
from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
from llava.model.tiny_tokenizer import train_tiny_tokenizer

TINY_VERSION = 1
TINY_LLM = dict(hidden_size=64, intermediate_size=172, num_hidden_layers=32, num_attention_heads=4,
                num_key_value_heads=4, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0)
NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
NEXT_FIELDS = dict(image_aspect_ratio="anyres", image_grid_pinpoints=NEXT_PINPOINTS,
                   mm_patch_merge_type="spatial_unpad", unfreeze_mm_vision_tower=True,
                   tokenizer_model_max_length=4096, torch_dtype="bfloat16")
TINY_CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=24, num_attention_heads=4,
                 image_size=336, patch_size=14, projection_dim=16)


def tiny_variant(model: str) -> str:
    """The name of a model table entry's tiny variant (its depth and token geometry, tiny widths)."""
    return f"tiny-{model}"


def default_cache_dir() -> Path:
    """Where generated assets live: $VISIONDROP_CACHE, else ~/.cache/visiondrop."""
    return Path(os.environ.get("VISIONDROP_CACHE", Path.home() / ".cache" / "visiondrop"))


def tiny_llava_path(cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Return the tiny checkpoint directory, creating it (and its sibling CLIP directory) on first use."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    model_dir = root / f"{tiny_variant('llava-v1.5-7b')}-v{TINY_VERSION}"
    if not (model_dir / "config.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            _write_tiny(Path(tmp), seed)
            for name in ("tiny-clip-vit-336", model_dir.name):
                target = root / name
                if not (target / "config.json").is_file():
                    shutil.rmtree(target, ignore_errors=True)
                    os.replace(Path(tmp) / name, target)
    return model_dir


def build_once(model_dir: Path, write) -> Path:
    """`model_dir`, written on first use by `write(directory)` into a temporary sibling and moved into place (unless
    another process got there first), so a half-written checkpoint is never seen."""
    if not (model_dir / "config.json").is_file():
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=model_dir.parent) as tmp:
            write(Path(tmp) / model_dir.name)
            if not (model_dir / "config.json").is_file():
                shutil.rmtree(model_dir, ignore_errors=True)
                os.replace(Path(tmp) / model_dir.name, model_dir)
    return model_dir


def tiny_llava_next_path(cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Return the tiny LLaVA-NeXT (v1.6 layout) checkpoint directory, creating it next to the tiny 1.5 one."""
    # Same tokenizer, LLM and projector as the tiny 1.5 checkpoint, plus anyres (v1.6 pinpoints), spatial_unpad,
    # a random image_newline and the tower inside (4.x keys model.vision_tower.vision_tower.vision_model.*,
    # perturbed from the tiny CLIP as if fine-tuned). As in the original, config.json has no tower config.
    base = tiny_llava_path(cache_dir, seed)
    model_dir = base.parent / f"{tiny_variant('llava-next-7b')}-v{TINY_VERSION}"
    return build_once(model_dir, lambda out: _write_tiny_next(base, out, seed))


def _write_tiny_next(base: Path, out: Path, seed: int) -> None:
    torch.manual_seed(seed + 1)
    fields = {**json.loads((base / "config.json").read_text()), **NEXT_FIELDS}
    config = LlavaConfig(**{k: v for k, v in fields.items() if k not in ("model_type", "architectures")})
    model = LlavaLlamaForCausalLM(config)
    result = model.load_state_dict(read_state_dict(base), strict=False)
    if result.unexpected_keys or result.missing_keys != ["model.image_newline"]:
        raise RuntimeError(f"tiny 1.5 checkpoint does not fit the NeXT model: {result}")
    model.model.vision_tower = CLIPVisionTower(str((base / fields["mm_vision_tower"]).resolve()))
    with torch.no_grad():
        model.model.image_newline.normal_(0.0, 1.0)
        for p in model.model.vision_tower.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    out.mkdir(parents=True)
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(base / name, out / name)
    save_checkpoint(model, out, fields)
    (out / "README.md").write_text("Tiny random LLaVA-NeXT (v1.6 layout) checkpoint for tests. Not a real model.\n")


def _write_tiny(out: Path, seed: int) -> None:
    torch.manual_seed(seed)
    clip_dir = out / "tiny-clip-vit-336"
    clip = CLIPModel(CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=TINY_CLIP, projection_dim=16))
    clip.save_pretrained(clip_dir)
    model_dir = out / f"{tiny_variant('llava-v1.5-7b')}-v{TINY_VERSION}"
    train_tiny_tokenizer(model_dir)
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(str(model_dir), use_fast=False))
    fields = dict(
        TINY_LLM, vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=0, model_type="llava",
        architectures=["LlavaLlamaForCausalLM"], torch_dtype="float16", mm_vision_tower="../tiny-clip-vit-336",
        mm_hidden_size=TINY_CLIP["hidden_size"], mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2,
        mm_vision_select_feature="patch", image_aspect_ratio="pad", mm_use_im_start_end=False,
        mm_use_im_patch_token=False, tokenizer_padding_side="right", tie_word_embeddings=False,
    )
    config = LlavaConfig(**{k: v for k, v in fields.items() if k not in ("model_type", "architectures")})
    model = LlavaLlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, 1.0)
        model.model.mm_projector.apply(_scale_linear)
    model.model.vision_tower = CLIPVisionTower(str(clip_dir))
    save_checkpoint(model, model_dir, fields)
    (model_dir / "README.md").write_text("Tiny random LLaVA-1.5-shaped checkpoint for tests. Not a real model.\n")


def _scale_linear(module: torch.nn.Module) -> None:
    if isinstance(module, torch.nn.Linear):
        module.weight.normal_(0.0, 1.0 / module.in_features ** 0.5)
