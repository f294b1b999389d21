"""A tiny random Video-LLaVA checkpoint in the original `LanguageBind/Video-LLaVA-7B` layout, created once, cached.

It keeps the real token geometry (224-px LanguageBind towers with 14-px patches = 16 x 16 patches + CLS, 8
frames, a 32-layer decoder) at tiny widths: the tiny LLaVA-1.5 tokenizer, decoder and projector, plus a video
tower with random (non-zero) temporal weights and an image tower, both stored inside the shards. The tower
configs are written to config.json (`video_tower_config` / `image_tower_config`), which the real checkpoint
leaves to the LanguageBind repositories. Weights are random: outputs are not answers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel

from llava.model.checkpoint import read_state_dict
from llava.model.multimodal_encoder.languagebind_video import (
    ORIGINAL_IMAGE_PREFIX,
    ORIGINAL_VIDEO_PREFIX,
    LanguageBindVideoTower,
)
from llava.model.tiny import TINY_CLIP, TINY_VERSION, build_once, tiny_llava_path

TINY_LANGUAGEBIND = dict(TINY_CLIP, num_hidden_layers=4, image_size=224, hidden_act="gelu")


def tiny_video_llava_path(cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Return the tiny Video-LLaVA checkpoint directory, creating it next to the tiny LLaVA-1.5 one."""
    base = tiny_llava_path(cache_dir, seed)
    return build_once(base.parent / f"tiny-video-llava-v{TINY_VERSION}", lambda out: _write_tiny_video(base, out, seed))


def original_tower_keys(tower: LanguageBindVideoTower) -> dict[str, torch.Tensor]:
    """The video tower's tensors under the original shards' names (temporal keys inside each encoder layer)."""
    out = {}
    for key, value in tower.state_dict().items():
        if key.startswith("vision_tower."):
            out[ORIGINAL_VIDEO_PREFIX + key.removeprefix("vision_tower.")] = value
        else:  # temporal_steps.{i}.{name}
            _, layer, rest = key.split(".", 2)
            out[f"{ORIGINAL_VIDEO_PREFIX}encoder.layers.{layer}.{rest}"] = value
    return out


def _write_tiny_video(base: Path, out: Path, seed: int) -> None:
    torch.manual_seed(seed + 2)
    tower_config = CLIPVisionConfig(**TINY_LANGUAGEBIND)
    video = LanguageBindVideoTower(tower_config)
    with torch.no_grad():
        for name, p in video.named_parameters():
            if name.startswith("temporal_steps.") and "norm" not in name:
                p.normal_(0.0, 0.1)
    image = CLIPVisionModel(tower_config)
    state = {k: v for k, v in read_state_dict(base).items() if not k.startswith("model.vision_tower.")}
    state.update(original_tower_keys(video))
    state.update({ORIGINAL_IMAGE_PREFIX + k: v for k, v in image.state_dict().items()})
    fields = {k: v for k, v in json.loads((base / "config.json").read_text()).items() if k != "mm_vision_tower"}
    fields.update(mm_video_tower="LanguageBind/LanguageBind_Video_merge",
                  mm_image_tower="LanguageBind/LanguageBind_Image",
                  video_tower_config=TINY_LANGUAGEBIND, image_tower_config=TINY_LANGUAGEBIND)
    out.mkdir(parents=True)
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(base / name, out / name)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(fields, indent=2))
    (out / "README.md").write_text("Tiny random Video-LLaVA checkpoint (original layout) for tests. "
                                   "Not a real model.\n")
