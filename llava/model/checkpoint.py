"""Read the weight files of a checkpoint directory and assign them to a model, naming any key that does not fit."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from safetensors import safe_open

log = logging.getLogger(__name__)

TOWER_PREFIX = "model.vision_tower."
# The original NeXT checkpoints nest CLIP under `vision_model.` (transformers 4.x); 5.x has no such wrapper.
TOWER_KEY_RENAMES = {"model.vision_tower.vision_tower.vision_model.": "model.vision_tower.vision_tower."}
# Buffers that checkpoints of the transformers 4.x era store next to the weights; the model recomputes them.
NON_WEIGHT_BUFFER = re.compile(r"(^|\.)(rotary_emb\.(inv_freq|cos_cached|sin_cached)|embeddings\.position_ids)$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as it is; the message names the file and what to change."""


def weight_files(root: Path) -> list[Path]:
    """The weight files of a checkpoint directory: the shards of an index, else its single weights file."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (root / index_name).is_file():
            names = sorted(set(json.loads((root / index_name).read_text())["weight_map"].values()))
            return [root / n for n in names]
    files = [root / n for n in ("model.safetensors", "pytorch_model.bin") if (root / n).is_file()][:1]
    if files:
        return files
    hint = ""
    if (root / "adapter_config.json").is_file() or (root / "mm_projector.bin").is_file():
        hint = " (it is a LoRA or projector-only checkpoint: pass the base LLM with --model-base / model_base)"
    raise FileNotFoundError(f"no weights in {root}: expected model.safetensors, pytorch_model.bin or a "
                            f"*.index.json with its shards{hint}")


def read_file(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of one safetensors or torch .bin file, with the 4.x tower keys renamed."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} is missing: re-download it")
    try:
        if path.name.endswith(".safetensors"):
            with safe_open(str(path), framework="pt") as f:
                state = {k: f.get_tensor(k) for k in f.keys()}
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or truncated file
        raise CheckpointError(f"cannot read weights file {path} ({err}); the file is corrupt, re-download it") from err
    return rename_tower_keys(state)


def rename_tower_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The 4.x tower keys of `state` under their 5.x names."""
    for old, new in TOWER_KEY_RENAMES.items():
        state = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in state.items()}
    return state


def read_weights(root: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Path]]:
    """All tensors of a checkpoint directory and, for each key, the file it came from."""
    state, sources = {}, {}
    for path in weight_files(Path(root)):
        part = read_file(path)
        state.update(part)
        sources.update(dict.fromkeys(part, path))
    return state, sources


def read_state_dict(model_path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory: one file or an index of shards, safetensors or torch .bin."""
    return read_weights(model_path)[0]


def assign_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], sources: dict[str, Path]) -> None:
    """Assign `state` to a meta-device model; known non-weight buffers are skipped, any other misfit is refused."""
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as err:  # shape mismatches: config.json does not describe these weights
        raise CheckpointError(f"the weights in {_where(sources)} do not fit config.json: "
                              f"{' '.join(str(err).split())[:600]}; config.json must be the one of these weights"
                              ) from err
    unexpected = [k for k in result.unexpected_keys if not NON_WEIGHT_BUFFER.search(k)]
    skipped = len(result.unexpected_keys) - len(unexpected)
    if unexpected:
        named = ", ".join(f"{k} (in {sources[k]})" for k in unexpected[:8]) + _more(unexpected)
        raise CheckpointError(f"checkpoint does not match the model: unexpected {named}; these weights are not of "
                              "the LLaVA-1.5 / LLaVA-NeXT (LLaMA) model that config.json describes")
    if result.missing_keys:
        raise CheckpointError(f"checkpoint does not match the model: missing {result.missing_keys[:8]}"
                              f"{_more(result.missing_keys)} (not in {_where(sources)}); the download is incomplete "
                              "or the checkpoint needs a base LLM (--model-base)")
    if skipped:
        log.warning("%s: ignored %d stored non-weight buffers (rotary inv_freq, position_ids); they are recomputed",
                    _where(sources), skipped)


def _where(sources: dict[str, Path]) -> str:
    """The checkpoint directories the weights came from, for messages."""
    return ", ".join(sorted({str(p.parent) for p in sources.values()})) or "the checkpoint"


def _more(keys: list[str]) -> str:
    return f" and {len(keys) - 8} more" if len(keys) > 8 else ""
