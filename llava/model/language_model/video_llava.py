"""Video-LLaVA-7B as a model family: its config, the model (LLaVA's decoder loop, two towers) and its loader.

Video-LLaVA (PKU-YuanGroup/Video-LLaVA) is LLaVA-1.5's Vicuna-7B decoder and mlp2x_gelu projector over two
LanguageBind towers (`llava.model.multimodal_encoder.languagebind_video`): a video tower with temporal attention
and a plain CLIP image tower, both ViT-L/14 at 224 px, stored inside the checkpoint.

Splicing. A video prompt holds `"<image>" * 8 + "\\n" + question`; the clip is passed as one [n, 3, 8, H, W]
tensor per video (`images`), and the 8 adjacent placeholders take one frame's projected tokens each, CLS kept
(257 per frame unpruned). The 8 frames form ONE visual segment with `visual_units` = 8 (one unit per frame).
Origins are numbered per frame: frame f's tower token k (k = 0 is CLS, 1..256 the patches) is
`f * 257 + k - 1`, so frame 0 keeps the -1 / 0..255 numbering of an image and frame f's CLS is f * 257 - 1.
An image ([n, 3, H, W]) goes through the image tower: 256 tokens, CLS dropped, as in LLaVA-1.5.

Checkpoint layouts (`load_video_llava`): the original `LanguageBind/Video-LLaVA-7B` (config.json with
`mm_video_tower` / `mm_image_tower`, shards with `model.video_tower.video_tower.*` incl. the temporal weights
and `model.image_tower.image_tower.*`), and the transformers port `Video-LLaVA-7B-hf` (keys under
`language_model.` / `multi_modal_projector.` / `video_tower.vision_model.`; no temporal weights, its tower is
labelled "HF port (no temporal attention)").
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import CLIPVisionConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from llava.model.checkpoint import assign_weights, read_weights
from llava.model.compat import image_processor_class
from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
from llava.model.multimodal_encoder.languagebind_video import (
    HF_IMAGE_PREFIXES,
    HF_VIDEO_PREFIXES,
    ORIGINAL_IMAGE_PREFIX,
    ORIGINAL_VIDEO_PREFIX,
    LanguageBindVideoTower,
    load_image_tower,
    load_video_tower,
)
from llava.model.tokenizer import load_tokenizer

# LanguageBind's towers: CLIP ViT-L/14 at 224 px (their configs live in the LanguageBind repositories, not in the
# Video-LLaVA checkpoint; `video_tower_config` / `image_tower_config` in config.json override these fields).
LANGUAGEBIND_TOWER = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                          image_size=224, patch_size=14, projection_dim=768, hidden_act="gelu")
TOWER_PREFIXES = (ORIGINAL_VIDEO_PREFIX, ORIGINAL_IMAGE_PREFIX, *HF_VIDEO_PREFIXES, *HF_IMAGE_PREFIXES)
HF_LLM_RENAMES = {"model.language_model.": "model.", "language_model.model.": "model.",
                  "language_model.lm_head.": "lm_head.",
                  "model.multi_modal_projector.linear_1.": "model.mm_projector.0.",
                  "model.multi_modal_projector.linear_2.": "model.mm_projector.2.",
                  "multi_modal_projector.linear_1.": "model.mm_projector.0.",
                  "multi_modal_projector.linear_2.": "model.mm_projector.2."}


class VideoLlavaConfig(LlavaConfig):
    """LLaVA config with the original checkpoint's `mm_video_tower` / `mm_image_tower` fields (plain attributes)."""

    model_type = "video_llava_llama"


class VideoClips:
    """A batch of clips [n, 3, T, H, W] standing for n * T `<image>` placeholders (one per frame)."""

    def __init__(self, videos: torch.Tensor):
        self.videos = videos

    def __len__(self) -> int:
        return self.videos.shape[0] * self.videos.shape[2]


class VideoLlavaMixin:
    """Over a LLaVA model class: a video tower beside the image tower (`model.vision_tower`); frames as units."""

    def __init__(self, config: LlavaConfig):
        super().__init__(config)
        self.video_tower: LanguageBindVideoTower | None = None  # attached by load_video_llava

    def prepare_multimodal_batch(self, input_ids, attention_mask=None, images=None, image_sizes=None):
        """As LLaVA's, where a 5-D `images` tensor is clips whose frames fill adjacent placeholders."""
        if isinstance(images, torch.Tensor) and images.dim() == 5:
            images = VideoClips(images)
        return super().prepare_multimodal_batch(input_ids, attention_mask, images, image_sizes)

    def towers(self) -> list[torch.nn.Module]:
        """The image tower and the video tower (an encoder stage runs in both)."""
        return [*super().towers(), self.get_video_tower()]

    def get_video_tower(self) -> LanguageBindVideoTower:
        if self.video_tower is None:
            raise RuntimeError("this model has no video tower attached: load it with load_pretrained_model()")
        return self.video_tower

    @property
    def tower_label(self) -> str:
        """The video tower's label: LanguageBind with temporal attention, or the -hf port without it."""
        return self.get_video_tower().label

    def tower_for(self, images: torch.Tensor) -> torch.nn.Module:
        """Clips [n, 3, T, H, W] go to the video tower (one unit per frame), images to the image tower."""
        return self.get_video_tower() if images.dim() == 5 else super().tower_for(images)

    def image_segments(self, images, image_sizes=None):
        """Per placeholder: its tokens, origins and 1 unit; clips go frame by frame through the video tower."""
        if not isinstance(images, VideoClips):
            return super().image_segments(images, image_sizes)
        units = self.encode_units(images.videos)
        frames = images.videos.shape[2]
        frame_index = torch.arange(units.origin.shape[0], device=units.origin.device) % frames
        origin = units.origin + (frame_index * self.video_tower.tokens_per_frame)[:, None]
        return [(f, o, 1) for f, o in zip(units.features, origin)]


class VideoLlavaForCausalLM(VideoLlavaMixin, LlavaLlamaForCausalLM):
    """Video-LLaVA on LLaVA's decoder loop (unpruned)."""


def video_model_class(model_cls: type) -> type:
    """The Video-LLaVA class over `model_cls` (LlavaLlamaForCausalLM or a pruning-aware subclass of it)."""
    if model_cls is LlavaLlamaForCausalLM:
        return VideoLlavaForCausalLM
    return type(f"Video{model_cls.__name__}", (VideoLlavaMixin, model_cls), {"__doc__": VideoLlavaMixin.__doc__})


def is_video_llava(model_path: str | Path) -> bool:
    """Whether a checkpoint directory holds Video-LLaVA (original: `mm_video_tower`; port: its model_type)."""
    path = Path(model_path) / "config.json"
    if not path.is_file():
        return False
    fields = json.loads(path.read_text())
    return "mm_video_tower" in fields or fields.get("model_type") == "video_llava"


def read_video_llava_config(fields: dict) -> tuple[VideoLlavaConfig, CLIPVisionConfig, CLIPVisionConfig]:
    """The decoder config and the (video, image) tower configs of an original or -hf config.json."""
    if fields.get("model_type") == "video_llava":  # the port: nested text / vision configs
        text = dict(fields.get("text_config", {}))
        tower = {**LANGUAGEBIND_TOWER, **fields.get("vision_config", {})}
        fields = {**text, "mm_hidden_size": tower["hidden_size"], "mm_projector_type": "mlp2x_gelu",
                  "mm_vision_select_layer": fields.get("vision_feature_layer", -2),
                  "video_tower_config": tower, "image_tower_config": tower}
    fields = {k: v for k, v in fields.items() if k not in ("model_type", "architectures", "torch_dtype")}
    video = CLIPVisionConfig(**{**LANGUAGEBIND_TOWER, **fields.get("video_tower_config", {})})
    image = CLIPVisionConfig(**{**LANGUAGEBIND_TOWER, **fields.get("image_tower_config", {})})
    return VideoLlavaConfig(**fields), video, image


def llm_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The decoder and projector tensors under this package's names (towers left out, -hf names mapped)."""
    out = {}
    for key, value in state.items():
        if key.startswith(TOWER_PREFIXES):
            continue
        for old, new in HF_LLM_RENAMES.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def load_video_llava(model_path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float16,
                     attn_implementation: str = "sdpa", model_cls: type = LlavaLlamaForCausalLM,
                     tower_cls: type = CLIPVisionTower, video_tower_cls: type = LanguageBindVideoTower):
    """(tokenizer, model, image processor, context length) of a Video-LLaVA checkpoint, either layout;
    the model is `video_model_class(model_cls)`, its image tower a `tower_cls`, its video tower a
    `video_tower_cls` (pruning-aware subclasses for encoder stages)."""
    root = Path(model_path)
    config, video_config, image_config = read_video_llava_config(json.loads((root / "config.json").read_text()))
    config._attn_implementation = attn_implementation
    state, sources = read_weights(root)
    select_layer = getattr(config, "mm_vision_select_layer", -2)
    with torch.device("meta"):
        model = video_model_class(model_cls)(config)
    assign_weights(model, llm_state(state), sources)
    model.model.rotary_emb = None  # rebuilt after the cast (inv_freq stays fp32)
    model.to(device=device, dtype=dtype)
    model.model.rotary_emb = LlamaRotaryEmbedding(config=config).to(device)
    model.video_tower = load_video_tower(state, video_config, select_layer=select_layer,
                                         tower_cls=video_tower_cls).to(device=device, dtype=dtype)
    model.model.vision_tower = load_image_tower(state, image_config, select_layer,
                                                tower_cls).to(device=device, dtype=dtype)
    side = image_config.image_size
    processor = image_processor_class()(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    model.model.vision_tower.image_processor = processor
    return load_tokenizer(root), model.eval(), processor, getattr(config, "max_sequence_length", 2048)
