"""The one table of models the configs target: each model's name (its one spelling), token geometry (config
validation and the accounting rule) and module shapes (FLOPs, random-weights efficiency runs)."""

from __future__ import annotations

from dataclasses import dataclass

from visiondrop.flops import LLMShape, ProjectorShape, VisionShape


@dataclass(frozen=True)
class Geometry:
    """Visual tokens of one sample as the LLM first sees them (before any pruning), in *units*: the views the
    tower encodes separately (one LLaVA-1.5 image, a NeXT base image or crop, a video frame).

    `patches_per_unit` tower patch tokens per unit; the LLM receives them plus the unit's CLS token when
    `cls_kept` (Video-LLaVA). `units` is the nominal count per sample (NeXT: 5 on a 2x2 grid; a real sample may
    have fewer). `tower_cls`: the tower has a CLS token an encoder stage can score with. `layers`: decoder layers.
    `variable`: the token count varies per image (Qwen2.5-VL's dynamic resolution): `patches_per_unit` is then the
    nominal image's, the one the configs' budgets (`budget_ratio`) and counts (`count_basis`) are written for.
    """

    patches_per_unit: int
    units: int
    layers: int
    cls_kept: bool = False
    tower_cls: bool = True
    variable: bool = False

    @property
    def tokens_per_unit(self) -> int:
        return self.patches_per_unit + int(self.cls_kept)

    @property
    def tower_tokens_per_unit(self) -> int:
        """Tokens an encoder stage chooses from in one unit (CLS + patches where the tower has CLS)."""
        return self.patches_per_unit + int(self.tower_cls)

    @property
    def visual_tokens(self) -> int:
        """Nominal visual tokens per sample entering the LLM without pruning (576, 2880, 2056)."""
        return self.units * self.tokens_per_unit


@dataclass(frozen=True)
class ModelSpec:
    """A model: its config name, geometry and module shapes."""

    name: str
    geometry: Geometry
    llm: LLMShape
    vision: VisionShape
    projector: ProjectorShape


VICUNA_7B = LLMShape(layers=32, hidden=4096, ffn=11008, heads=32, kv_heads=32, vocab=32000)
VICUNA_13B = LLMShape(layers=40, hidden=5120, ffn=13824, heads=40, kv_heads=40, vocab=32000)
CLIP_L_336 = VisionShape(layers=24, width=1024, ffn=4096, tokens=577)
# LanguageBind's video tower: CLIP ViT-L/14-224 with temporal attention across its 8 frames in every layer
LANGUAGEBIND_VIDEO = VisionShape(layers=24, width=1024, ffn=4096, tokens=257, frames=8)
QWEN2_7B = LLMShape(layers=28, hidden=3584, ffn=18944, heads=28, kv_heads=4, vocab=152064)
# Qwen2.5-VL's vision transformer on the nominal 1344 x 1008 image: 96 x 72 patches (2 frames of 14 x 14 each), no
# CLS, SwiGLU MLPs, windows of 112 px (8 x 8 patches; the image tiles into 12 x 9 of them) except the 4 full-attention
# blocks; 1728 merged tokens after the 2 x 2 PatchMerger (its two linears, 5120 -> 5120 -> 3584, as the projector).
# Norms, biases, activations and rotary tables are not counted (as for every model here).
QWEN25_VL_VISION = VisionShape(layers=32, width=1280, ffn=3420, tokens=6912, patch_pixels=2 * 14 * 14 * 3, cls=False,
                               gated_mlp=True, window=64, full_layers=4)
QWEN_NOMINAL_TOKENS = 1728

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("llava-v1.5-7b", Geometry(576, 1, 32), VICUNA_7B, CLIP_L_336, ProjectorShape(1024, 4096)),
    ModelSpec("llava-v1.5-13b", Geometry(576, 1, 40), VICUNA_13B, CLIP_L_336, ProjectorShape(1024, 5120)),
    ModelSpec("llava-next-7b", Geometry(576, 5, 32), VICUNA_7B, CLIP_L_336, ProjectorShape(1024, 4096)),
    ModelSpec("video-llava-7b", Geometry(256, 8, 32, cls_kept=True), VICUNA_7B, LANGUAGEBIND_VIDEO,
              ProjectorShape(1024, 4096)),
    ModelSpec("qwen2.5-vl-7b", Geometry(QWEN_NOMINAL_TOKENS, 1, 28, tower_cls=False, variable=True), QWEN2_7B,
              QWEN25_VL_VISION, ProjectorShape(4 * 1280, 3584, mid_width=4 * 1280)),
)}


# Spellings used before this table (FLOPs and benchmark CLIs), for an error naming the new one.
FORMER_NAMES = {"llava15-7b": "llava-v1.5-7b"}


def model_spec(name: str) -> ModelSpec:
    """The table entry of a model name, or a ValueError listing the known names (naming the new spelling of an
    old one)."""
    if name in FORMER_NAMES:
        raise ValueError(f"model {name!r} is now spelled {FORMER_NAMES[name]!r}")
    if name not in MODELS:
        raise ValueError(f"model {name!r} is not one of {', '.join(MODELS)}")
    return MODELS[name]
