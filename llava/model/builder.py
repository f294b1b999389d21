"""Load original LLaVA checkpoints (config.json + sharded .bin / .safetensors) from a local directory."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoTokenizer
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower

TOWER_PREFIX = "model.vision_tower."
# The original NeXT checkpoints nest CLIP under `vision_model.` (transformers 4.x); 5.x has no such wrapper.
TOWER_KEY_RENAMES = {"model.vision_tower.vision_tower.vision_model.": "model.vision_tower.vision_tower."}


def read_config(model_path: str | Path) -> LlavaConfig:
    """Read an original LLaVA config.json (its model_type 'llava' must not resolve to transformers' class)."""
    path = Path(model_path) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --model-path must be a LLaVA checkpoint directory "
                                "(config.json + model weights), e.g. a local copy of liuhaotian/llava-v1.5-7b")
    fields = json.loads(path.read_text())
    fields.pop("model_type", None)
    fields.pop("architectures", None)
    fields.pop("torch_dtype", None)
    config = LlavaConfig(**fields)
    config.architectures = ["LlavaLlamaForCausalLM"]
    return config


def read_state_dict(model_path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory: one file or an index of shards, safetensors or torch .bin."""
    root = Path(model_path)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (root / index_name).is_file():
            files = sorted(set(json.loads((root / index_name).read_text())["weight_map"].values()))
            break
    else:
        files = [n for n in ("model.safetensors", "pytorch_model.bin") if (root / n).is_file()][:1]
    if not files:
        raise FileNotFoundError(f"no weights in {root}: expected model.safetensors, pytorch_model.bin or a "
                                "*.index.json with its shards")
    state = {}
    for name in files:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"shard {path} is listed in the index but missing: re-download it")
        try:
            if name.endswith(".safetensors"):
                with safe_open(str(path), framework="pt") as f:
                    state.update({k: f.get_tensor(k) for k in f.keys()})
            else:
                state.update(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as err:  # corrupt or truncated file
            raise ValueError(f"cannot read weights file {path} ({err}); the file is corrupt, re-download it") from err
    for old, new in TOWER_KEY_RENAMES.items():
        state = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in state.items()}
    return state


def resolve_vision_tower(config: LlavaConfig, model_path: Path, override: str | None) -> str:
    """The tower to load: an explicit override, a directory relative to the checkpoint, or the hub name."""
    name = override or getattr(config, "mm_vision_tower", None) or getattr(config, "vision_tower", None)
    if name is None:
        raise ValueError(f"{model_path}/config.json has no mm_vision_tower: pass --vision-tower DIR")
    relative = (model_path / name).resolve()
    return str(relative) if not override and relative.is_dir() else name


def build_model(config: LlavaConfig, dtype: torch.dtype, device: str | torch.device,
                state: dict | None, vision_tower: str | None, tower_cls=CLIPVisionTower,
                vision_dtype: torch.dtype | None = None, model_cls=LlavaLlamaForCausalLM) -> LlavaLlamaForCausalLM:
    """Instantiate on the meta device, assign the checkpoint tensors, attach the vision tower."""
    tower_in_ckpt = bool(getattr(config, "unfreeze_mm_vision_tower", False)) or (
        state is not None and any(k.startswith(TOWER_PREFIX) for k in state))
    with torch.device("meta"):
        model = model_cls(config)
        if tower_in_ckpt:
            model.model.vision_tower = tower_cls(
                vision_tower or "checkpoint", config.mm_vision_select_layer,
                getattr(config, "mm_vision_select_feature", "patch"), config=tower_config(config, vision_tower))
    if state is None:  # random weights of the stated shapes (benchmarks): materialise in `dtype`, initialise
        model = model.to(dtype=dtype).to_empty(device=device)
        _init_random(model)
    else:
        result = model.load_state_dict(state, strict=False, assign=True)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f"checkpoint does not match the model: missing {result.missing_keys[:8]}, "
                             f"unexpected {result.unexpected_keys[:8]}")
    _reset_position_ids(model, device)
    model.model.rotary_emb = None  # its buffers are not in the checkpoint: rebuilt after the cast
    model.to(device=device, dtype=dtype)
    model.model.rotary_emb = LlamaRotaryEmbedding(config=config).to(device)  # inv_freq stays fp32
    if not tower_in_ckpt:
        model.model.vision_tower = tower_cls(vision_tower, config.mm_vision_select_layer,
                                             getattr(config, "mm_vision_select_feature", "patch"))
    model.model.vision_tower.to(device=device, dtype=vision_dtype or dtype)
    return model.eval()


def tower_config(config: LlavaConfig, vision_tower: str | None):
    """CLIPVisionConfig of an in-checkpoint tower: `vision_tower_config`, else the config of `vision_tower`."""
    # Original v1.6 checkpoints store no tower config: the reference builds it from mm_vision_tower (hub name).
    from transformers import CLIPVisionConfig

    fields = getattr(config, "vision_tower_config", None)
    if fields is not None:
        return CLIPVisionConfig(**fields)
    if not vision_tower:
        raise ValueError("the checkpoint holds the vision tower weights but its shape is unknown: config.json has "
                         "neither vision_tower_config nor mm_vision_tower; pass --vision-tower DIR (a CLIP "
                         "directory whose config.json gives the tower shape)")
    try:
        return CLIPVisionConfig.from_pretrained(vision_tower)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"the checkpoint holds the vision tower weights, but their CLIP config could not be read from "
            f"{vision_tower!r} ({err.__class__.__name__}); the original v1.6 checkpoints take it from "
            "mm_vision_tower (e.g. openai/clip-vit-large-patch14-336): put that CLIP config.json in a local "
            "directory and pass --vision-tower DIR, or add vision_tower_config to the model's config.json"
        ) from err


def _reset_position_ids(model: torch.nn.Module, device: str | torch.device) -> None:
    """Rebuild CLIP's non-persistent `position_ids` buffers: never in a checkpoint (left on the meta device by
    `load_state_dict(assign=True)`) and uninitialised memory after `to_empty`."""
    for module in model.modules():
        ids = module._buffers.get("position_ids")
        if ids is not None:
            module._buffers["position_ids"] = torch.arange(ids.shape[-1], device=device).expand(1, -1)


def _init_random(model: torch.nn.Module, std: float = 0.02) -> None:
    """Deterministic-shape random init for efficiency runs (values do not matter, shapes do)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "layernorm" in name):
                p.fill_(1.0)
            elif p.dim() == 1:
                p.zero_()
            else:
                p.normal_(0.0, std)


def load_pretrained_model(
    model_path: str,
    model_base: str | None = None,
    model_name: str | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float16,
    attn_implementation: str = "sdpa",
    vision_tower: str | None = None,
    vision_dtype: torch.dtype | None = None,
    tower_cls=CLIPVisionTower,
    model_cls=LlavaLlamaForCausalLM,
):
    """Load tokenizer, model and context length from an original LLaVA checkpoint directory.

    `vision_dtype=None` keeps the faithful precisions: the separately loaded LLaVA-1.5 tower in fp32, a tower
    stored in the checkpoint (NeXT) in `dtype`. Returns (tokenizer, model, image_processor_config, context_len).
    """
    if model_base is not None:
        raise NotImplementedError("LoRA / projector-only checkpoints (model_base) are not supported yet")
    root = Path(model_path)
    if not root.is_dir():
        raise FileNotFoundError(f"model path {root} does not exist: download the checkpoint there or fix "
                                "--model-path")
    config = read_config(root)
    config._attn_implementation = attn_implementation
    if not any((root / name).is_file() for name in ("tokenizer.model", "tokenizer.json")):
        raise FileNotFoundError(f"model path {root} has no tokenizer files (tokenizer.model or tokenizer.json); "
                                "copy them (with tokenizer_config.json) from the original checkpoint")
    tokenizer = AutoTokenizer.from_pretrained(str(root), use_fast=False)
    tower = resolve_vision_tower(config, root, vision_tower)
    separate_tower = not getattr(config, "unfreeze_mm_vision_tower", False)
    if vision_dtype is None:
        vision_dtype = torch.float32 if separate_tower else dtype
    model = build_model(config, dtype, device, read_state_dict(root), tower, tower_cls, vision_dtype, model_cls)
    context_len = getattr(config, "max_sequence_length", None) or config.max_position_embeddings
    return tokenizer, model, model.get_vision_tower().config, context_len


def save_checkpoint(model: LlavaLlamaForCausalLM, out_dir: str | Path, config_fields: dict) -> None:
    """Write `model` in the original layout: config.json + model.safetensors (tower only if in-checkpoint)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keep_tower = bool(config_fields.get("unfreeze_mm_vision_tower", False))
    state = {k: v.contiguous() for k, v in model.state_dict().items()
             if keep_tower or not k.startswith(TOWER_PREFIX)}
    if keep_tower:
        old, new = next(iter(TOWER_KEY_RENAMES.items()))
        state = {(old + k[len(new):] if k.startswith(new) else k): v for k, v in state.items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config_fields, indent=2))
