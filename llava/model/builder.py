"""Load original LLaVA checkpoints (config.json + sharded .bin / .safetensors) from a local directory."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from llava.model.checkpoint import TOWER_KEY_RENAMES, TOWER_PREFIX, CheckpointError, assign_weights, read_weights
from llava.model.compat import image_processor_class
from llava.model.family import QWEN_FAMILY, check_pixel_bounds, checkpoint_family
from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from llava.model.language_model.qwen2_5_vl import load_qwen_model
from llava.model.language_model.video_llava import is_video_llava, load_video_llava
from llava.model.model_base import is_lora, merge_lora, weights_over_base
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
from llava.model.multimodal_encoder.languagebind_video import LanguageBindVideoTower
from llava.model.tokenizer import load_tokenizer


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


def resolve_vision_tower(config: LlavaConfig, model_path: Path, override: str | None) -> str:
    """The tower to load: an explicit override, a directory relative to the checkpoint, or the hub name."""
    name = override or getattr(config, "mm_vision_tower", None) or getattr(config, "vision_tower", None)
    if name is None:
        raise CheckpointError(f"{model_path}/config.json has no mm_vision_tower: pass --vision-tower DIR")
    relative = (model_path / name).resolve()
    return str(relative) if not override and relative.is_dir() else name


def build_model(config: LlavaConfig, dtype: torch.dtype, device: str | torch.device,
                state: dict | None, vision_tower: str | None, tower_cls=CLIPVisionTower,
                vision_dtype: torch.dtype | None = None, model_cls=LlavaLlamaForCausalLM,
                sources: dict[str, Path] | None = None) -> LlavaLlamaForCausalLM:
    """Instantiate on the meta device, assign the checkpoint tensors (`sources`: key -> file, for errors),
    attach the vision tower."""
    tower_in_ckpt = bool(getattr(config, "unfreeze_mm_vision_tower", False)) or (
        state is not None and any(k.startswith(TOWER_PREFIX) for k in state))
    with torch.device("meta"):
        model = model_cls(config)
        if tower_in_ckpt:
            model.model.vision_tower = tower_cls(
                vision_tower or "checkpoint", config.mm_vision_select_layer,
                getattr(config, "mm_vision_select_feature", "patch"), config=tower_config(config, vision_tower))
    if state is None:  # random weights of the stated shapes (benchmarks): materialise in `dtype`, initialise
        model = materialize_random(model, dtype, device)
    else:
        assign_weights(model, state, sources or {})
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
        raise CheckpointError("the checkpoint holds the vision tower weights but its shape is unknown: config.json has "
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


def image_processor_for(tower: CLIPVisionTower, source: str | None):
    """The tower's CLIP image processor: `source`'s preprocessor_config.json, else CLIP's at the tower size."""
    cls = image_processor_class()
    if source and (Path(source) / "preprocessor_config.json").is_file():
        return cls.from_pretrained(source)
    side = tower.config.image_size
    return cls(size={"shortest_edge": side}, crop_size={"height": side, "width": side})


def materialize_random(module: torch.nn.Module, dtype: torch.dtype, device: str | torch.device) -> torch.nn.Module:
    """A module built on the meta device, materialised on `device` in `dtype` with random weights (benchmarks)."""
    module = module.to(dtype=dtype).to_empty(device=device)
    _init_random(module)
    _reset_position_ids(module, device)
    return module


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
            if p.dim() == 1 and ("norm" in name or ".ln_" in name):  # ln_: Qwen2.5-VL's PatchMerger norm
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
    video_tower_cls=LanguageBindVideoTower,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
):
    """Load tokenizer, model, image processor and context length from an original LLaVA checkpoint directory.

    With `model_base` (a base LLM directory), `model_path` is a LoRA checkpoint (adapter merged at load) or a
    projector-only one, as in LLaVA; the tokenizer then comes from `model_base`. `model_name` is accepted for
    LLaVA's signature: the kind of checkpoint is read from its files.
    `vision_dtype=None` keeps the faithful precisions: the separately loaded LLaVA-1.5 tower in fp32, a tower
    stored in the checkpoint (NeXT) in `dtype`. Returns (tokenizer, model, image_processor, context_len), the
    processor also set as `model.get_vision_tower().image_processor` as in LLaVA. A Video-LLaVA checkpoint loads
    through its family with `tower_cls` as its image tower and `video_tower_cls` as its video tower. A Qwen2.5-VL
    checkpoint (config.json model_type `qwen2_5_vl`) loads through its family (llava.model.language_model.qwen2_5_vl),
    `min_pixels` / `max_pixels` bounding its image processor's dynamic resolution (refused for the other families).
    """
    root = Path(model_path)
    if not root.is_dir():
        raise FileNotFoundError(f"model path {root} does not exist: download the checkpoint there or fix "
                                "--model-path")
    family = checkpoint_family(root)
    check_pixel_bounds(family, min_pixels, max_pixels)
    if is_video_llava(root):  # its own family: two LanguageBind towers inside the checkpoint
        return load_video_llava(root, device, dtype, attn_implementation, model_cls, tower_cls, video_tower_cls)
    if family == QWEN_FAMILY:
        return load_qwen_model(root, device, dtype, attn_implementation, min_pixels, max_pixels)
    config = read_config(root)
    config._attn_implementation = attn_implementation
    base = Path(model_base) if model_base is not None else None
    tokenizer_root = base or root
    state, sources = read_weights(root) if base is None else weights_over_base(root, base)
    if not any((tokenizer_root / name).is_file() for name in ("tokenizer.model", "tokenizer.json")):
        raise FileNotFoundError(f"model path {tokenizer_root} has no tokenizer files (tokenizer.model or "
                                "tokenizer.json); copy them (with tokenizer_config.json) from the original checkpoint")
    tokenizer = load_tokenizer(tokenizer_root)
    tower = resolve_vision_tower(config, root, vision_tower)
    separate_tower = not getattr(config, "unfreeze_mm_vision_tower", False)
    if vision_dtype is None:
        vision_dtype = torch.float32 if separate_tower else dtype
    model = build_model(config, dtype, device, state, tower, tower_cls, vision_dtype, model_cls, sources)
    if base is not None and is_lora(root):
        model = merge_lora(model, root)
    vision = model.get_vision_tower()
    vision.image_processor = image_processor_for(vision, tower)
    return tokenizer, model, vision.image_processor, getattr(config, "max_sequence_length", 2048)


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
