"""LanguageBind video tower of Video-LLaVA: CLIP ViT-L/14-224 with a temporal attention step in every layer.

Behaviour (PKU-YuanGroup/Video-LLaVA, `languagebind/video/modeling_video.py`, `add_time_attn=True`,
`num_frames=8`): a clip [B, 3, T, H, W] is flattened to B*T frames ('(b t)'), embedded and pre-layer-normed
as in CLIP. Every encoder layer then

1. adds its learned `temporal_embedding` [1, T, C] to every token (frame t gets row t, all 257 positions);
2. keeps that sum as the residual, regroups tokens per spatial position ('(b n) t d'), applies
   `temporal_layer_norm1` and `temporal_attn` (CLIP self-attention across the T frames, no mask) and adds the
   result back ('(b t) n d');
3. runs the ordinary spatial CLIP block (layer_norm1, self_attn, residual, layer_norm2, mlp, residual).

The LLM receives `hidden_states[-2]` (output of the second-last layer) with all 257 tokens per frame, CLS
kept: [B, T, 257, C]. The temporal modules are transformers' own `CLIPAttention` and `nn.LayerNorm`; the
spatial blocks are transformers' `CLIPVisionModel` unchanged.

Checkpoint key layouts read by `load_video_tower` (C = tower width, i = layer):

- original `LanguageBind/Video-LLaVA-7B`: `model.video_tower.video_tower.` + a plain CLIP vision key
  (`embeddings.class_embedding`, `embeddings.patch_embedding.weight`, `embeddings.position_embedding.weight`,
  `pre_layrnorm.*`, `encoder.layers.{i}.{self_attn.{q,k,v,out}_proj,layer_norm1,mlp.fc1,mlp.fc2,layer_norm2}.*`,
  `post_layernorm.*`) plus per layer `encoder.layers.{i}.temporal_embedding` [1, 8, C],
  `encoder.layers.{i}.temporal_attn.{q,k,v,out}_proj.{weight,bias}` and
  `encoder.layers.{i}.temporal_layer_norm1.{weight,bias}`. `embeddings.position_ids` is ignored.
- transformers port `Video-LLaVA-7B-hf`: `video_tower.vision_model.` (the hub's shards) or `video_tower.`
  (what transformers 5.x's `save_pretrained` writes) + the plain CLIP keys. It has no temporal weights: the
  tower is built with `temporal=False` and labelled "HF port (no temporal attention)".

The LanguageBind image tower (`model.image_tower.image_tower.*`, `image_tower.vision_model.*` in the port) is a
plain CLIP ViT-L/14-224 (its config has `add_time_attn=False`; patch dropout is inactive at inference), so
`load_image_tower` returns the ordinary `CLIPVisionTower` with CLS dropped: 256 tokens per image.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel
from transformers.models.clip.modeling_clip import CLIPAttention

from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower, selected_layer_index
from visiondrop.reduction import UnitTokens

NUM_FRAMES = 8
ORIGINAL_VIDEO_PREFIX = "model.video_tower.video_tower."
# The port's names, longest first: the hub's shards (`vision_model.` inside the tower), then what transformers
# 5.x's VideoLlavaForConditionalGeneration.save_pretrained writes (`video_tower.` + the CLIP keys) and its
# in-memory state_dict (`model.video_tower.`). The original prefix is always tried before these.
HF_VIDEO_PREFIXES = ("video_tower.vision_model.", "model.video_tower.vision_model.", "video_tower.",
                     "model.video_tower.")
ORIGINAL_IMAGE_PREFIX = "model.image_tower.image_tower."
HF_IMAGE_PREFIXES = ("image_tower.vision_model.", "model.image_tower.vision_model.", "image_tower.",
                     "model.image_tower.")
TEMPORAL_NAMES = ("temporal_embedding", "temporal_attn.", "temporal_layer_norm1.")
TEMPORAL_LABEL = "LanguageBind (temporal attention)"
HF_PORT_LABEL = "HF port (no temporal attention)"


class TemporalStep(nn.Module):
    """One layer's temporal part: learned frame embedding, then pre-norm attention across frames as a residual."""

    def __init__(self, config: CLIPVisionConfig, num_frames: int):
        super().__init__()
        self.temporal_embedding = nn.Parameter(torch.zeros(1, num_frames, config.hidden_size))
        self.temporal_layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.temporal_attn = CLIPAttention(config)

    def forward(self, hidden: torch.Tensor, frames: int) -> torch.Tensor:
        """[B*T, N, C] frame-major tokens -> same shape, each spatial position attended across its T frames."""
        bt, n, c = hidden.shape
        per_position = hidden.view(bt // frames, frames, n, c).transpose(1, 2)  # [B, N, T, C]
        if frames != 1:  # as the original: a single frame gets no temporal embedding
            per_position = per_position + self.temporal_embedding[:, :frames].unsqueeze(0)
        residual = per_position
        mixed, _ = self.temporal_attn(self.temporal_layer_norm1(per_position.reshape(-1, frames, c)))
        out = residual + mixed.view_as(residual)
        return out.transpose(1, 2).reshape(bt, n, c)


class LanguageBindVideoTower(nn.Module):
    """Video tower: [B, 3, T, H, W] clips -> selected-layer features [B, T, 257, C] (CLS kept)."""

    def __init__(self, config: CLIPVisionConfig, num_frames: int = NUM_FRAMES, temporal: bool = True,
                 select_layer: int = -2):
        super().__init__()
        self.num_frames = num_frames
        self.temporal = temporal
        self.select_layer = select_layer
        self.vision_tower = CLIPVisionModel(config)
        self.temporal_steps = nn.ModuleList(
            [TemporalStep(config, num_frames) for _ in range(config.num_hidden_layers)] if temporal else [])
        self.requires_grad_(False)

    @property
    def config(self) -> CLIPVisionConfig:
        return self.vision_tower.config

    @property
    def label(self) -> str:
        """What this tower is, for result files: the faithful LanguageBind tower or the port without it."""
        return TEMPORAL_LABEL if self.temporal else HF_PORT_LABEL

    @property
    def tokens_per_frame(self) -> int:
        return (self.config.image_size // self.config.patch_size) ** 2 + 1

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_tower.embeddings.patch_embedding.weight.dtype

    # The frame-level hook: the same `select(layer_input, features, layer)` as CLIPVisionTower's, keeping CLS
    # (`select_feature`), so an encoder-stage method that overrides it reduces every frame as one unit.
    select_feature = "cls_patch"
    select = CLIPVisionTower.select

    def selected_states(self, videos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 3, T, H, W] normalised frames -> the selected layer's input and output, [B*T, N, C] frame-major."""
        if videos.dim() != 5 or videos.shape[1] != 3:
            raise ValueError(f"videos of shape {tuple(videos.shape)}: expected [batch, 3, frames, H, W]")
        b, _, t, h, w = videos.shape
        if self.temporal and t > self.num_frames:
            raise ValueError(f"{t} frames per clip: the temporal embedding has {self.num_frames}")
        frames = videos.transpose(1, 2).reshape(b * t, 3, h, w).to(self.dtype)
        tower = self.vision_tower
        hidden = tower.pre_layrnorm(tower.embeddings(frames))
        layer_input = hidden
        for i in range(selected_layer_index(self.config.num_hidden_layers, self.select_layer)):
            if self.temporal:
                hidden = self.temporal_steps[i](hidden, t)
            layer_input = hidden
            hidden = tower.encoder.layers[i](hidden, None)
        return layer_input, hidden

    @torch.no_grad()
    def encode(self, videos: torch.Tensor) -> UnitTokens:
        """[B, 3, T, H, W] -> the tokens of every frame (B*T units, frame-major) chosen by `select`."""
        layer_input, features = self.selected_states(videos)
        layer = self.vision_tower.encoder.layers[selected_layer_index(self.config.num_hidden_layers,
                                                                      self.select_layer) - 1]
        return self.select(layer_input, features, layer)

    @torch.no_grad()
    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] normalised frames -> [B, T, tokens_per_frame, C] from the selected layer."""
        b, t = videos.shape[0], videos.shape[2]
        hidden = self.selected_states(videos)[1]
        return hidden.view(b, t, hidden.shape[1], hidden.shape[2])


def _strip(state_dict: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The entries under the first of `prefixes` that the checkpoint uses, with that prefix removed."""
    for prefix in prefixes:
        found = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if found:
            return found
    return {}


def _temporal_key(key: str) -> str | None:
    """`encoder.layers.{i}.temporal_*` -> `temporal_steps.{i}.temporal_*`; None for a spatial key."""
    parts = key.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["encoder", "layers"] and parts[3].startswith(TEMPORAL_NAMES):
        return f"temporal_steps.{parts[2]}.{parts[3]}"
    return None


def load_video_tower(state_dict: dict[str, torch.Tensor], config: CLIPVisionConfig, num_frames: int = NUM_FRAMES,
                     select_layer: int = -2, tower_cls: type = LanguageBindVideoTower) -> LanguageBindVideoTower:
    """Build the video tower (a `tower_cls`, default LanguageBindVideoTower) from a Video-LLaVA checkpoint's
    tensors (original or -hf layout, see module doc)."""
    original = _strip(state_dict, (ORIGINAL_VIDEO_PREFIX,))
    weights = original or _strip(state_dict, HF_VIDEO_PREFIXES)
    if not weights:
        raise KeyError(f"no video tower weights: expected keys under {ORIGINAL_VIDEO_PREFIX!r} (original "
                       f"Video-LLaVA-7B) or {HF_VIDEO_PREFIXES[0]!r} (Video-LLaVA-7B-hf)")
    renamed = {}
    for key, value in weights.items():
        if key == "embeddings.position_ids":
            continue
        temporal_key = _temporal_key(key)
        renamed[temporal_key if temporal_key else f"vision_tower.{key}"] = value
    temporal = any(k.startswith("temporal_steps.") for k in renamed)
    if original and not temporal:
        raise KeyError(f"{ORIGINAL_VIDEO_PREFIX}encoder.layers.*.temporal_* missing: the original layout "
                       "carries the temporal weights; re-download the checkpoint shards")
    tower = tower_cls(config, num_frames, temporal=temporal, select_layer=select_layer)
    misfit = f"video tower weights do not fit a {config.num_hidden_layers}-layer, width {config.hidden_size} tower"
    try:
        missing, unexpected = tower.load_state_dict(renamed, strict=False)
    except RuntimeError as err:  # shape mismatch
        raise ValueError(f"{misfit}: {str(err).splitlines()[1].strip()}; check the tower config") from None
    if missing or unexpected:
        raise KeyError(f"{misfit}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return tower


def load_image_tower(state_dict: dict[str, torch.Tensor], config: CLIPVisionConfig, select_layer: int = -2,
                     tower_cls: type = CLIPVisionTower) -> CLIPVisionTower:
    """The LanguageBind image tower (plain CLIP, CLS dropped: 256 tokens at 224 px; a `tower_cls`) from a
    checkpoint's tensors."""
    weights = _strip(state_dict, (ORIGINAL_IMAGE_PREFIX, *HF_IMAGE_PREFIXES))
    weights.pop("embeddings.position_ids", None)
    if not weights:
        raise KeyError(f"no image tower weights: expected keys under {ORIGINAL_IMAGE_PREFIX!r} or "
                       f"{HF_IMAGE_PREFIXES[0]!r}")
    tower = tower_cls("languagebind-image", select_layer, "patch", config=config)
    tower.vision_tower.load_state_dict(weights, strict=True)
    return tower
