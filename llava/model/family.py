"""Model families: which one a checkpoint or a pruning config belongs to, and each family's unpruned config.

Two families: Qwen2.5-VL's (`qwen2.5-vl-7b`, as a pruning config's `model:` spells it) and LLaVA's (`llava`:
LLaVA-1.5, LLaVA-NeXT, Video-LLaVA). A checkpoint is Qwen2.5-VL's when its config.json says `model_type:
qwen2_5_vl`. Nothing here imports torch, so the benchmark scripts ask before anything loads:

    python -m llava.model.family MODEL_PATH   (prints the unpruned config of the checkpoint's family)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from visiondrop.config import ConfigError

QWEN_FAMILY = "qwen2.5-vl-7b"
LLAVA_FAMILY = "llava"
# The shipped unpruned config of each family (repository-relative): the scripts' default CONFIG.
UNPRUNED_CONFIGS = {LLAVA_FAMILY: "configs/none/llava15.yaml", QWEN_FAMILY: "configs/none/qwen2_5_vl.yaml"}


def model_family(model: str) -> str:
    """The family a model name (a pruning config's `model:`) belongs to."""
    return QWEN_FAMILY if model.startswith("qwen2.5-vl") else LLAVA_FAMILY


def checkpoint_family(model_path: str | Path) -> str:
    """The family of a checkpoint directory, from its config.json (LLaVA's when it has none to read)."""
    config = Path(model_path) / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("model_type") == "qwen2_5_vl":
        return QWEN_FAMILY
    return LLAVA_FAMILY


def check_config_family(config_model: str, checkpoint_family: str) -> None:
    """Refuse a pruning config written for another family's model (its geometry and schedules do not apply)."""
    if model_family(config_model) != checkpoint_family:
        raise ConfigError(f"the pruning config targets model {config_model!r} ({model_family(config_model)} family) "
                          f"but the checkpoint is a {checkpoint_family} model: use a config written for "
                          f"{checkpoint_family}")


def check_pixel_bounds(family: str, min_pixels: int | None, max_pixels: int | None) -> None:
    """Refuse image-processor pixel bounds for a family without dynamic resolution (LLaVA's fixed 336-px input)."""
    if family != QWEN_FAMILY and (min_pixels is not None or max_pixels is not None):
        raise ConfigError(f"min_pixels / max_pixels bound Qwen2.5-VL's dynamic resolution, but the checkpoint is a "
                          f"{family} model (fixed input size): drop them")


def main(argv: list[str] | None = None) -> int:
    """CLI: print the unpruned config of a checkpoint's family."""
    ap = argparse.ArgumentParser(description="The unpruned config of a checkpoint's model family.")
    ap.add_argument("model_path", help="checkpoint directory")
    args = ap.parse_args(argv)
    print(UNPRUNED_CONFIGS[checkpoint_family(args.model_path)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
