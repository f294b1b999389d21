"""Checkpoints over a base LLM (`model_base`), as LLaVA's builder loads them: LoRA adapters and projector-only."""

from __future__ import annotations

from pathlib import Path

import torch

from llava.model.checkpoint import CheckpointError, read_file, read_weights, rename_tower_keys

NON_LORA_FILE = "non_lora_trainables.bin"
PROJECTOR_FILE = "mm_projector.bin"


def is_lora(model_path: Path) -> bool:
    """A LoRA checkpoint: a peft adapter (adapter_config.json) next to the LLaVA config."""
    return (model_path / "adapter_config.json").is_file()


def weights_over_base(model_path: Path, model_base: Path) -> tuple[dict[str, torch.Tensor], dict[str, Path]]:
    """The base LLM's weights plus the checkpoint's own: non_lora_trainables.bin (LoRA) or mm_projector.bin."""
    if not model_base.is_dir():
        raise FileNotFoundError(f"model base {model_base} does not exist: --model-base must be the base LLM "
                                "directory the checkpoint was trained from (e.g. a local copy of lmsys/vicuna-7b-v1.5)")
    own = model_path / (NON_LORA_FILE if is_lora(model_path) else PROJECTOR_FILE)
    if not own.is_file():
        raise FileNotFoundError(
            f"{own} not found: with --model-base, {model_path} must be a LoRA checkpoint (adapter_config.json, "
            f"adapter_model.*, {NON_LORA_FILE}) or a projector-only one ({PROJECTOR_FILE}); leave --model-base out "
            "for a full checkpoint")
    state, sources = read_weights(model_base)
    extra = rename_tower_keys({_strip_peft_prefix(k): v for k, v in read_file(own).items()})
    state.update(extra)
    sources.update(dict.fromkeys(extra, own))
    return state, sources


def _strip_peft_prefix(key: str) -> str:
    """`base_model.model.model.x` (peft's names in non_lora_trainables.bin) -> `model.x`."""
    key = key.removeprefix("base_model.")
    return key.removeprefix("model.") if key.startswith("model.model.") else key


def merge_lora(model: torch.nn.Module, model_path: Path) -> torch.nn.Module:
    """Merge the checkpoint's LoRA adapter into the LLM weights (peft); the vision tower is left as it is."""
    try:
        from peft import PeftModel
    except ImportError as err:
        raise CheckpointError(f"{model_path} is a LoRA checkpoint: merging it needs peft "
                              "(pip install -e '.[lora]')") from err
    tower = model.model.vision_tower
    model.model.vision_tower = None  # LLaVA trains LoRA on the LLM before the tower is attached
    try:
        merged = PeftModel.from_pretrained(model, str(model_path)).merge_and_unload()
    finally:
        model.model.vision_tower = tower
    return merged.eval()
