"""Pruning-aware subclasses: towers whose token selection (the CLIP image tower, Video-LLaVA's video tower per
frame) and an LLaVA model whose stage boundaries call a `visiondrop` method, plus the loader the evaluation entry
points use.

With a `SectionTimer` attached (`attach_timer`, benchmarks only) the ViT (tower + projector) is timed as
"vit", the encoder-stage selection as "select_encoder" and every in-LLM `reduce` as "select_llm"."""

from __future__ import annotations

import torch

from llava.model.builder import load_pretrained_model
from llava.model.family import LLAVA_FAMILY, check_config_family
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
from llava.model.multimodal_encoder.clip_encoder import CLIPLayerView, CLIPVisionTower
from llava.model.multimodal_encoder.languagebind_video import LanguageBindVideoTower
from visiondrop.config import PruningConfig, load_config
from visiondrop.execution import Execution
from visiondrop.methods import build_method
from visiondrop.methods.base import Method
from visiondrop.reduction import UnitTokens
from visiondrop.timing import SectionTimer, timed


class PruningTower:
    """Mixin over a tower whose `select(layer_input, features, layer)` chooses every unit's output tokens from its
    selected CLIP layer: the method's encoder stage chooses them instead when the method has one."""

    method: Method | None = None
    execution: Execution | None = None
    timer: SectionTimer | None = None

    @property
    def reduces_tokens(self) -> bool:
        return self.method is not None and bool(self.method.has_encoder_stage)

    def select(self, layer_input, features, layer) -> UnitTokens:
        if not self.reduces_tokens:
            return super().select(layer_input, features, layer)
        with timed(self.timer, "select_encoder"):
            return self.method.reduce_encoder(CLIPLayerView(layer), layer_input, features, self.execution)


class PruningCLIPVisionTower(PruningTower, CLIPVisionTower):
    """CLIPVisionTower (one unit per image or sub-image) with the method's encoder stage."""


class PruningVideoTower(PruningTower, LanguageBindVideoTower):
    """Video-LLaVA's video tower with the method's encoder stage, run per frame (one unit = a frame's 257 tokens,
    scored on the spatial CLS attention of the selected layer, after that layer's temporal step)."""


class VisionDropLlavaForCausalLM(LlavaLlamaForCausalLM):
    """LlavaLlamaForCausalLM running a pruning method at its encoder output and LLM stage boundaries."""

    method: Method | None = None
    pruning_config: PruningConfig | None = None
    timer: SectionTimer | None = None

    def set_pruning(self, config: PruningConfig) -> None:
        """Install a validated config's method (the `none` method restores the unpruned model), with a fresh
        execution layer (its captured graphs belong to this method's options)."""
        check_config_family(config.model, LLAVA_FAMILY)
        method = build_method(config)
        towers = self.towers()
        if method.has_encoder_stage and not all(isinstance(tower, PruningTower) for tower in towers):
            raise TypeError("encoder-stage methods need the model loaded with pruning towers (load_model_for_eval)")
        execution = Execution(config.execution)
        self.model.install_method(method, execution, config.source)
        for tower in towers:
            if isinstance(tower, PruningTower):
                tower.method, tower.execution = method, execution
        self.method, self.pruning_config = method, config
        self.attach_timer(self.timer)

    def attach_timer(self, timer: SectionTimer | None) -> None:
        """Time the ViT and the method's selection work into `timer`; None detaches (nothing is timed)."""
        self.timer = timer
        for tower in self.towers():
            if isinstance(tower, PruningTower):
                tower.timer = timer
        self.model.time_stages(timer)

    def encode_units(self, images: torch.Tensor) -> UnitTokens:
        with timed(self.timer, "vit"):
            return super().encode_units(images)


def load_model_for_eval(model_path: str, config: PruningConfig | str | None = None, overrides: list[str] = (),
                        **kwargs):
    """Load a checkpoint with the pruning-aware classes and install `config` (a PruningConfig or a YAML path;
    None = unpruned, for the checkpoint's own family). Keyword arguments go to `load_pretrained_model`. Returns the
    same tuple."""
    if config is not None and not isinstance(config, PruningConfig):
        config = load_config(config, overrides)
    tokenizer, model, image_processor, context_len = load_pretrained_model(
        model_path, tower_cls=PruningCLIPVisionTower, video_tower_cls=PruningVideoTower,
        model_cls=VisionDropLlavaForCausalLM, **kwargs)
    if config is None:
        config = load_config(None, overrides, raw={"method": "none", "model": model.unpruned_model})
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


__all__ = ["PruningTower", "PruningCLIPVisionTower", "PruningVideoTower", "VisionDropLlavaForCausalLM",
           "load_model_for_eval",
           "official_flags_to_overrides"]
