"""LanguageBind video tower: plain CLIP when the temporal part is zero, frames mixed when it is not, both
checkpoint layouts, and the image tower."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from llava.model.multimodal_encoder.languagebind_video import (
    HF_PORT_LABEL,
    TEMPORAL_LABEL,
    LanguageBindVideoTower,
    load_image_tower,
    load_video_tower,
)

T = 8


def tiny_config(layers: int = 3) -> CLIPVisionConfig:
    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                            image_size=28, patch_size=14, hidden_act="quick_gelu")


def random_tower(layers: int = 3, seed: int = 0) -> LanguageBindVideoTower:
    torch.manual_seed(seed)
    tower = LanguageBindVideoTower(tiny_config(layers))
    with torch.no_grad():
        for name, p in tower.named_parameters():
            if name.startswith("temporal_steps."):
                p.normal_(std=0.3)
    return tower.eval()


def clip_like(tower: LanguageBindVideoTower) -> CLIPVisionModel:
    plain = CLIPVisionModel(tower.config).eval()
    plain.load_state_dict(tower.vision_tower.state_dict())
    return plain


def original_layout(tower: LanguageBindVideoTower) -> dict[str, torch.Tensor]:
    """The tower's tensors as the original Video-LLaVA-7B shards name them (plus unrelated LLM keys)."""
    out = {"model.embed_tokens.weight": torch.zeros(3, 4),
           "model.video_tower.video_tower.embeddings.position_ids": torch.arange(5)[None]}
    for key, value in tower.state_dict().items():
        if key.startswith("vision_tower."):
            out["model.video_tower.video_tower." + key.removeprefix("vision_tower.")] = value.clone()
        else:
            _, layer, rest = key.split(".", 2)
            out[f"model.video_tower.video_tower.encoder.layers.{layer}.{rest}"] = value.clone()
    return out


def clips(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, T, 28, 28, generator=torch.Generator().manual_seed(seed))


def per_frame_clip(plain: CLIPVisionModel, videos: torch.Tensor) -> torch.Tensor:
    b, _, t, h, w = videos.shape
    frames = videos.transpose(1, 2).reshape(b * t, 3, h, w)
    hidden = plain(frames, output_hidden_states=True).hidden_states[-2]
    return hidden.view(b, t, *hidden.shape[1:])


def test_zero_temporal_weights_equal_plain_clip_per_frame():
    tower = random_tower()
    with torch.no_grad():
        for step in tower.temporal_steps:
            step.temporal_embedding.zero_()
            step.temporal_attn.out_proj.weight.zero_()
            step.temporal_attn.out_proj.bias.zero_()
    videos = clips()
    out = tower(videos)
    assert out.shape == (2, T, 5, 32)  # all tokens per frame, CLS kept
    torch.testing.assert_close(out, per_frame_clip(clip_like(tower), videos), atol=1e-5, rtol=1e-5)


def test_nonzero_temporal_weights_mix_frames():
    tower = random_tower()
    videos = clips()
    changed = videos.clone()
    changed[:, :, 5] += 1.0
    a, b = tower(videos), tower(changed)
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-3  # frame 0 sees frame 5
    torch.testing.assert_close(a[1:], tower(videos[1:]))  # clips in a batch stay independent
    assert not torch.allclose(a, per_frame_clip(clip_like(tower), videos), atol=1e-3)


def test_one_layer_matches_per_position_reference():
    """hidden_states[-2] of a 2-layer tower = one layer: embedding added per frame, attention per position."""
    tower = random_tower(layers=2)
    videos = clips(batch=1)
    frames = videos[0].transpose(0, 1)  # [T, 3, H, W]
    vt, step = tower.vision_tower, tower.temporal_steps[0]
    with torch.no_grad():
        x = vt.pre_layrnorm(vt.embeddings(frames))  # [T, N, C]
        mixed = torch.empty_like(x)
        for p in range(x.shape[1]):
            seq = x[:, p] + step.temporal_embedding[0]
            mixed[:, p] = seq + step.temporal_attn(step.temporal_layer_norm1(seq[None]))[0][0]
        expected = vt.encoder.layers[0](mixed, None)
    torch.testing.assert_close(tower(videos)[0], expected, atol=1e-5, rtol=1e-5)


def test_original_layout_loads_the_embedded_temporal_weights():
    source = random_tower(seed=3)
    with torch.no_grad():
        source.temporal_steps[1].temporal_embedding.copy_(torch.arange(T * 32.0).view(1, T, 32) / 100)
    loaded = load_video_tower(original_layout(source), tiny_config())
    assert loaded.temporal and loaded.label == TEMPORAL_LABEL
    for (name, want), (_, got) in zip(source.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(want, got), name
    videos = clips()
    torch.testing.assert_close(loaded(videos), source(videos))


def test_original_layout_without_temporal_weights_is_refused():
    state = {k: v for k, v in original_layout(random_tower()).items() if ".temporal_" not in k}
    with pytest.raises(KeyError, match="temporal"):
        load_video_tower(state, tiny_config())


def test_hf_port_layout_loads_without_temporal_attention_and_is_labelled():
    source = random_tower(seed=4)
    state = {"video_tower.vision_model." + k: v for k, v in source.vision_tower.state_dict().items()}
    loaded = load_video_tower(state, tiny_config())
    assert not loaded.temporal and loaded.label == HF_PORT_LABEL and len(loaded.temporal_steps) == 0
    videos = clips()
    torch.testing.assert_close(loaded(videos), per_frame_clip(clip_like(source), videos), atol=1e-5, rtol=1e-5)


def test_wrong_width_is_a_one_line_error():
    state = original_layout(random_tower())
    with pytest.raises(ValueError, match="width 48 tower: size mismatch"):
        load_video_tower(state, CLIPVisionConfig(**{**tiny_config().to_dict(), "hidden_size": 48}))


def test_image_tower_is_plain_clip_without_cls():
    torch.manual_seed(5)
    plain = CLIPVisionModel(tiny_config()).eval()
    for prefix in ("model.image_tower.image_tower.", "image_tower.vision_model."):
        tower = load_image_tower({prefix + k: v for k, v in plain.state_dict().items()}, tiny_config())
        images = torch.randn(2, 3, 28, 28)
        torch.testing.assert_close(tower(images), plain(images, output_hidden_states=True).hidden_states[-2][:, 1:])
