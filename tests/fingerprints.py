"""Behaviour fingerprints of every shipped config on the tiny models: kept origins per stage, visual tokens per
layer and greedy tokens of a padded batch of two samples (fp32, CPU). `tests/data/fingerprints.json` holds the
values recorded before a refactor; tests/test_fingerprints.py checks the code still produces them bit for bit.

    python tests/fingerprints.py --write   # re-record (only when a behaviour change is intended)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
RECORD = TESTS / "data" / "fingerprints.json"
QUESTIONS = ["<image>\nWhat is the man holding in his left hand?", "<image>\nIs the sky blue?"]
NEXT_SIZES = [(640, 480), (1000, 200)]  # a 2x2 grid (5 sub-images) and a 3x1 grid (4 sub-images)
NEW_TOKENS = 6


def _configs(video: bool) -> list[str]:
    return sorted(str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml")
                  if is_video(p.name) == video and not is_qwen(p.name))


def shipped_configs() -> list[str]:
    """Every LLaVA image-model config under configs/, as paths relative to configs/ (the ones fingerprinted here;
    the Qwen2.5-VL ones, `qwen2_5_vl*.yaml`, need the tiny Qwen model: tests/test_qwen_pruning.py)."""
    return _configs(video=False)


def video_configs() -> list[str]:
    """The Video-LLaVA configs (`video_llava*.yaml`), relative to configs/: not fingerprinted; the contract tests
    run them on the tiny Video-LLaVA."""
    return _configs(video=True)


def is_next(config: str) -> bool:
    return Path(config).stem.startswith("llava_next")


def is_video(config: str) -> bool:
    return Path(config).stem.startswith("video_llava")


def is_qwen(config: str) -> bool:
    return Path(config).stem.startswith("qwen2_5_vl")


def _picture(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 256, (height, width, 3), dtype=np.uint8))


def inputs(tokenizer, model, next_model: bool) -> dict:
    """The generate() arguments: two right-padded prompts, one image each."""
    from conftest import encode_prompt, right_pad, stand_in_image

    from llava.mm_utils import preprocess_images

    ids, mask = right_pad([encode_prompt(tokenizer, q) for q in QUESTIONS])
    if not next_model:
        images = torch.cat([stand_in_image(11), stand_in_image(12)])
        return dict(input_ids=ids, attention_mask=mask, images=images)
    pictures = [_picture(*size, seed=20 + i) for i, size in enumerate(NEXT_SIZES)]
    images = preprocess_images(pictures, "anyres", 336, model.config.image_grid_pinpoints)
    return dict(input_ids=ids, attention_mask=mask, images=images, image_sizes=NEXT_SIZES)


def fingerprint(tokenizer, model, config: str) -> dict:
    """Greedy tokens, per-layer counts and per-stage kept origins of one config on the loaded tiny model."""
    from visiondrop.config import load_config

    model.set_pruning(load_config(ROOT / "configs" / config))
    tokens = model.generate(**inputs(tokenizer, model, is_next(config)), max_new_tokens=NEW_TOKENS,
                            min_new_tokens=NEW_TOKENS)
    stats = model.last_stats
    return {
        "tokens": tokens.tolist(),
        "visual_per_layer": stats.visual_per_layer.T.tolist(),
        "stage_origins": [[o.tolist() for o in stage] for stage in stats.stage_origins],
    }


def compute_all(cache_dir: Path) -> dict[str, dict]:
    from llava.model.tiny import tiny_llava_next_path, tiny_llava_path
    from llava.model.visiondrop_llava import load_model_for_eval

    out = {}
    for next_model, path in ((False, tiny_llava_path(cache_dir)), (True, tiny_llava_next_path(cache_dir))):
        tokenizer, model, _, _ = load_model_for_eval(str(path), None, dtype=torch.float32, device="cpu")
        for config in shipped_configs():
            if is_next(config) == next_model:
                out[config] = fingerprint(tokenizer, model, config)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {RECORD.relative_to(ROOT)}")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the tiny checkpoints are built")
    args = parser.parse_args()
    sys.path.insert(0, str(TESTS))
    torch.set_num_threads(1)
    from llava.model.tiny import default_cache_dir

    prints = compute_all(args.cache_dir or default_cache_dir())
    if args.write:
        RECORD.write_text(json.dumps(prints, separators=(",", ":")) + "\n")
        print(f"wrote {len(prints)} fingerprints to {RECORD}")
    else:
        recorded = json.loads(RECORD.read_text())
        changed = [c for c in prints if recorded.get(c) != prints[c]]
        print(f"{len(prints) - len(changed)} of {len(prints)} configs unchanged; changed: {changed or 'none'}")


if __name__ == "__main__":
    main()
