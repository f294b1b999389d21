"""Pruning-aware subclasses: a CLIP tower whose token selection and an LLaVA model whose stage boundaries
call a `visiondrop` method, plus the loader the evaluation entry points use.

With a `SectionTimer` attached (`attach_timer`, benchmarks only) the ViT (tower + projector) is timed as
"vit", the encoder-stage selection as "select_encoder" and every in-LLM `reduce` as "select_llm"."""

from __future__ import annotations

import torch

from llava.model.builder import load_pretrained_model
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
from llava.model.language_model.qwen2_5_vl import LLAVA_FAMILY, check_config_family
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
from visiondrop.config import PruningConfig, load_config
from visiondrop.methods import build_method
from visiondrop.methods.base import Method
from visiondrop.timing import SectionTimer, timed


class PruningCLIPVisionTower(CLIPVisionTower):
    """CLIPVisionTower whose output tokens come from the method's encoder stage when it has one."""

    method: Method | None = None
    timer: SectionTimer | None = None

    @property
    def reduces_tokens(self) -> bool:
        return self.method is not None and bool(self.method.has_encoder_stage)

    def dominant_tokens(self, n_out: int) -> int:
        """Dominant tokens per sub-image: `encoder_split[0]` (VisionDrop), `options.dominant` (VisionZip), else all."""
        if not self.reduces_tokens:
            return n_out
        split = getattr(self.method, "encoder_split", None)
        dominant = split[0] if split is not None else getattr(self.method.options, "dominant", n_out)
        return min(int(dominant), n_out)

    def select(self, layer_input, features, layer):
        if not self.reduces_tokens:
            return super().select(layer_input, features, layer)
        with timed(self.timer, "select_encoder"):
            return self.method.reduce_encoder(layer_input, features, layer, self.select_feature)


class TimedReducer:
    """The decoder loop's reducer with every `reduce` call timed as "select_llm"; all else is the method's."""

    def __init__(self, method: Method, timer: SectionTimer):
        self.method, self.timer = method, timer

    def __getattr__(self, name: str):
        if name in ("method", "timer"):  # not yet set (copy / unpickling): never recurse
            raise AttributeError(name)
        return getattr(self.method, name)  # boundaries, compact_positions, score_layer_offset, begin_prefill

    def reduce(self, *args, **kwargs):
        with timed(self.timer, "select_llm"):
            return self.method.reduce(*args, **kwargs)


class VisionDropLlavaForCausalLM(LlavaLlamaForCausalLM):
    """LlavaLlamaForCausalLM running a pruning method at its encoder output and LLM stage boundaries."""

    method: Method | None = None
    pruning_config: PruningConfig | None = None
    timer: SectionTimer | None = None

    def set_pruning(self, config: PruningConfig) -> None:
        """Install a validated config's method (the `none` method restores the unpruned model)."""
        check_config_family(config.model, LLAVA_FAMILY)
        method = build_method(config)
        n_layers = len(self.model.layers)
        if method.boundaries and max(method.boundaries) >= n_layers:
            raise ValueError(f"{config.source or 'config'}: pruning after layer {max(method.boundaries)} but the "
                             f"model has {n_layers} layers")
        tower = self.get_vision_tower()
        if method.has_encoder_stage and not isinstance(tower, PruningCLIPVisionTower):
            raise TypeError("encoder-stage methods need the model loaded with PruningCLIPVisionTower")
        if isinstance(tower, PruningCLIPVisionTower):
            tower.method = method
        self.method, self.pruning_config = method, config
        self.attach_timer(self.timer)

    def attach_timer(self, timer: SectionTimer | None) -> None:
        """Time the ViT and the method's selection work into `timer`; None detaches (nothing is timed)."""
        self.timer = timer
        tower = self.get_vision_tower()
        if isinstance(tower, PruningCLIPVisionTower):
            tower.timer = timer
        method = self.method
        if method is None or not method.boundaries:
            self.model.reducer = None
        else:
            self.model.reducer = method if timer is None else TimedReducer(method, timer)

    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with timed(self.timer, "vit"):
            return super().encode_images(images)


def load_model_for_eval(model_path: str, config: PruningConfig | str | None = None, overrides: list[str] = (),
                        **kwargs):
    """Load a checkpoint with the pruning-aware classes and install `config` (a PruningConfig or a YAML path;
    None = unpruned). Keyword arguments go to `load_pretrained_model`. Returns the same tuple."""
    if not isinstance(config, PruningConfig):
        config = load_config(config, overrides)
    tokenizer, model, image_processor, context_len = load_pretrained_model(
        model_path, tower_cls=PruningCLIPVisionTower, model_cls=VisionDropLlavaForCausalLM, **kwargs)
    model.set_pruning(config)
    return tokenizer, model, image_processor, context_len


def official_flags_to_overrides(dominant: int | None = None, contextual: int | None = None,
                                layer_list: str | None = None, image_token_list: str | None = None) -> list[str]:
    """Translate the released VisionDrop flags into config overrides (None = not given)."""
    out = []
    if dominant is not None:
        out.append(f"encoder.dominant={dominant}")
    if contextual is not None:
        out.append(f"encoder.contextual={contextual}")
    if layer_list is not None:
        out.append(f"llm.layers={layer_list}")
    if image_token_list is not None:
        out.append(f"llm.tokens={image_token_list}")
    return out


__all__ = ["PruningCLIPVisionTower", "TimedReducer", "VisionDropLlavaForCausalLM", "load_model_for_eval",
           "official_flags_to_overrides"]
