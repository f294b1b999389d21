"""Video-LLaVA family on the tiny random checkpoint: splicing geometry, equality with transformers' own
VideoLlavaForConditionalGeneration, both checkpoint layouts, batching and the KV cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, VideoLlavaConfig, VideoLlavaForConditionalGeneration

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.builder import load_pretrained_model
from llava.model.multimodal_encoder.languagebind_video import HF_PORT_LABEL, TEMPORAL_LABEL
from llava.model.tiny_video import TINY_LANGUAGEBIND, tiny_video_llava_path

FRAMES, PER_FRAME = 8, 257


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory):
    return tiny_video_llava_path(tmp_path_factory.mktemp("video-cache"))


@pytest.fixture(scope="module")
def loaded(tiny_video):
    return load_pretrained_model(str(tiny_video), dtype=torch.float32)[1]


def video_prompt(question: list[int]) -> torch.Tensor:
    return torch.tensor([1, 5, 6, *[IMAGE_TOKEN_INDEX] * FRAMES, 13, *question])


def clips(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, FRAMES, 224, 224, generator=torch.Generator().manual_seed(seed))


def test_spliced_length_is_text_plus_eight_frames_of_257(loaded):
    ids = video_prompt([7, 8, 9])
    batch = loaded.prepare_multimodal_batch(ids[None], images=clips(1))
    text = ids.numel() - FRAMES
    assert batch.hidden.shape[1] == text + FRAMES * PER_FRAME
    assert batch.visual_len.tolist() == [FRAMES * PER_FRAME] and batch.visual_units.tolist() == [FRAMES]
    origin = batch.origin[0]
    assert origin[0] == -1 and origin[PER_FRAME - 1] == PER_FRAME - 2  # frame 0: CLS, then patches 0..255
    assert origin[PER_FRAME] == PER_FRAME - 1  # frame 1's CLS = 1 * 257 - 1
    assert torch.equal(origin, torch.arange(-1, FRAMES * PER_FRAME - 1))


def test_image_takes_256_tokens_without_cls(loaded):
    ids = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 13, 7]])
    batch = loaded.prepare_multimodal_batch(ids, images=torch.randn(1, 3, 224, 224))
    assert batch.visual_len.tolist() == [256] and batch.hidden.shape[1] == 4 + 256


def test_original_layout_loads_the_embedded_temporal_weights(tiny_video, loaded):
    state = load_file(str(tiny_video / "model.safetensors"))
    key = "model.video_tower.video_tower.encoder.layers.2.temporal_attn.q_proj.weight"
    assert loaded.video_tower.label == TEMPORAL_LABEL
    stored = state[key]
    assert stored.abs().max() > 0
    assert torch.equal(loaded.video_tower.temporal_steps[2].temporal_attn.q_proj.weight, stored)
    stored_embedding = state["model.video_tower.video_tower.encoder.layers.0.temporal_embedding"]
    assert torch.equal(loaded.video_tower.temporal_steps[0].temporal_embedding, stored_embedding)


def test_batch_of_two_equals_one_by_one_and_cache_equals_recompute(loaded):
    rows = [video_prompt([7, 8, 9, 10]), video_prompt([11, 12])]
    videos = clips(2, seed=3)
    ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones_like(r) for r in rows], batch_first=True)
    together = loaded.generate(ids, images=videos, attention_mask=mask, max_new_tokens=4, min_new_tokens=4)
    for b, row in enumerate(rows):
        alone = loaded.generate(row[None], images=videos[b:b + 1], max_new_tokens=4, min_new_tokens=4)
        assert torch.equal(together[b], alone[0])
        uncached = loaded.generate(row[None], images=videos[b:b + 1], max_new_tokens=4, min_new_tokens=4,
                                   use_cache=False)
        assert torch.equal(uncached, alone)


def hf_model(loaded) -> VideoLlavaForConditionalGeneration:
    """transformers' VideoLlava with our tiny weights, temporal modules absent (as in its port)."""
    cfg = loaded.config
    text = LlamaConfig(**{k: getattr(cfg, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                       "num_attention_heads", "num_key_value_heads", "vocab_size",
                                                       "rms_norm_eps", "max_position_embeddings")})
    vocab = cfg.vocab_size
    config = VideoLlavaConfig(vision_config=TINY_LANGUAGEBIND, text_config=text.to_dict(),
                              image_token_index=vocab - 2, video_token_index=vocab - 1, projector_hidden_act="gelu",
                              vision_feature_layer=-2, vision_feature_select_strategy="default")
    model = VideoLlavaForConditionalGeneration(config).eval()
    ours = loaded.state_dict()
    state = {}
    for key, value in ours.items():
        if key.startswith("model.mm_projector."):
            index = key.split(".")[2]
            state[f"model.multi_modal_projector.linear_{1 if index == '0' else 2}.{key.split('.', 3)[3]}"] = value
        elif key.startswith("video_tower.vision_tower."):
            state["model.video_tower." + key.removeprefix("video_tower.vision_tower.")] = value
        elif key.startswith("model.vision_tower.vision_tower."):
            state["model.image_tower." + key.removeprefix("model.vision_tower.vision_tower.")] = value
        elif key.startswith("model.") and not key.startswith("model.vision_tower."):
            state["model.language_model." + key.removeprefix("model.")] = value
        elif key == "lm_head.weight":
            state[key] = value
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and not [k for k in result.missing_keys if "position_ids" not in k]
    return model


def test_unpruned_logits_equal_transformers_with_temporal_zeroed(tiny_video):
    model = load_pretrained_model(str(tiny_video), dtype=torch.float32)[1]
    with torch.no_grad():
        for step in model.video_tower.temporal_steps:
            step.temporal_embedding.zero_()
            step.temporal_attn.out_proj.weight.zero_()
            step.temporal_attn.out_proj.bias.zero_()
    reference = hf_model(model)
    ids = video_prompt([7, 8, 9])
    videos = clips(1, seed=5)
    ours = model(ids[None], images=videos)
    vocab = model.config.vocab_size
    hf_ids = torch.cat([ids[:3], torch.full((FRAMES * PER_FRAME,), vocab - 1), ids[3 + FRAMES:]])[None]
    theirs = reference(input_ids=hf_ids, pixel_values_videos=videos.transpose(1, 2)).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def save_hf_port(model_path, out):
    """The tiny checkpoint's weights saved by transformers' own VideoLlavaForConditionalGeneration.save_pretrained
    (its current key layout), plus the tokenizer files; returns the folder."""
    loaded = load_pretrained_model(str(model_path), dtype=torch.float32)[1]
    hf_model(loaded).save_pretrained(str(out))
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(model_path / name, out / name)
    return out


def test_checkpoint_saved_by_transformers_loads_and_is_labelled(tiny_video, tmp_path):
    """What transformers' save_pretrained writes loads (no temporal weights: labelled as the port) and gives the
    same logits as transformers' own class on images and on videos."""
    out = save_hf_port(tiny_video, tmp_path / "saved")
    state = load_file(str(out / "model.safetensors"))
    assert any(k.startswith("video_tower.") for k in state) and not any(".temporal_" in k for k in state)
    model = load_pretrained_model(str(out), dtype=torch.float32)[1]
    assert model.video_tower.label == HF_PORT_LABEL and not model.video_tower.temporal_steps
    reference = VideoLlavaForConditionalGeneration.from_pretrained(str(out), dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    ids = video_prompt([7, 8, 9])
    videos = clips(1, seed=6)
    hf_ids = torch.cat([ids[:3], torch.full((FRAMES * PER_FRAME,), vocab - 1), ids[3 + FRAMES:]])[None]
    theirs = reference(input_ids=hf_ids, pixel_values_videos=videos.transpose(1, 2)).logits
    torch.testing.assert_close(model(ids[None], images=videos), theirs, atol=1e-4, rtol=1e-4)
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(8))
    image_ids = torch.tensor([1, 5, IMAGE_TOKEN_INDEX, 13, 7])
    hf_image_ids = torch.cat([image_ids[:2], torch.full((256,), vocab - 2), image_ids[3:]])[None]
    theirs = reference(input_ids=hf_image_ids, pixel_values_images=image).logits
    torch.testing.assert_close(model(image_ids[None], images=image), theirs, atol=1e-4, rtol=1e-4)


def test_hub_port_layout_loads_and_is_labelled(tiny_video, tmp_path, loaded):
    """The hub's Video-LLaVA-7B-hf shards (`video_tower.vision_model.*`, `language_model.model.*`) load."""
    state = load_file(str(tiny_video / "model.safetensors"))
    port = {}
    for key, value in state.items():
        if ".temporal_" in key:
            continue
        if key.startswith("model.video_tower.video_tower."):
            port["video_tower.vision_model." + key.removeprefix("model.video_tower.video_tower.")] = value
        elif key.startswith("model.image_tower.image_tower."):
            port["image_tower.vision_model." + key.removeprefix("model.image_tower.image_tower.")] = value
        elif key.startswith("model.mm_projector."):
            index = key.split(".")[2]
            port[f"multi_modal_projector.linear_{1 if index == '0' else 2}.{key.split('.', 3)[3]}"] = value
        elif key.startswith("model."):
            port["language_model." + key] = value
        else:
            port["language_model." + key] = value
    out = tmp_path / "port"
    out.mkdir()
    save_file(port, str(out / "model.safetensors"))
    fields = json.loads((tiny_video / "config.json").read_text())
    text = {k: v for k, v in fields.items() if not k.startswith("mm_") and not k.endswith("tower_config")}
    (out / "config.json").write_text(json.dumps({"model_type": "video_llava", "text_config": text,
                                                 "vision_config": TINY_LANGUAGEBIND, "vision_feature_layer": -2}))
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(tiny_video / name, out / name)
    model = load_pretrained_model(str(out), dtype=torch.float32)[1]
    assert model.video_tower.label == HF_PORT_LABEL
    ids = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 13, 7]])
    image = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(model(ids, images=image), loaded(ids, images=image))


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def pruned(tiny_video, config: str):
    from llava.model.visiondrop_llava import load_model_for_eval

    return load_model_for_eval(str(tiny_video), str(CONFIGS / config), dtype=torch.float32)[1]


@pytest.mark.parametrize("config, first, average", [("none/video_llava.yaml", 2056, 2056.0),
                                                    ("fastv/video_llava_256.yaml", 2056, 256.0),
                                                    ("visionzip/video_llava_256.yaml", 256, 256.0),
                                                    ("visiondrop/video_llava_256.yaml", 3 * 256, 256.0)])
def test_shipped_configs_measure_their_budget(tiny_video, config, first, average):
    """The tiny model has the real geometry (8 x 257, 32 layers): every config averages its budget, VisionDrop's
    encoder stage hands the LLM 3x the budget (the paper's video rule)."""
    model = pruned(tiny_video, config)
    model(video_prompt([7, 8])[None], images=clips(1))
    assert model.last_stats.visual_per_layer[0].tolist() == [first]
    assert model.last_stats.average_visual_tokens == [average]


@pytest.mark.parametrize("config, per_frame", [("visiondrop/video_llava_256.yaml", (84, 12)),
                                               ("visionzip/video_llava_256.yaml", (27, 5))])
def test_encoder_stage_runs_per_frame_on_the_spatial_cls_attention(tiny_video, config, per_frame):
    """Each frame is one unit: it keeps its CLS + the top patches of its own CLS attention in the selected layer
    (spatial attention, on that layer's input after its temporal step), then contextual tokens."""
    from llava.model.multimodal_encoder.clip_encoder import CLIPLayerView, selected_layer_index

    model = pruned(tiny_video, config)
    videos = clips(1, seed=7)
    model(video_prompt([7, 8])[None], images=videos)
    kept = model.last_stats.stage_origins[0][0].view(FRAMES, -1)
    dominant, contextual = per_frame
    assert kept.shape[1] == dominant + contextual
    tower = model.video_tower
    layer_input, _ = tower.selected_states(videos)
    layer = tower.vision_tower.encoder.layers[selected_layer_index(tower.config.num_hidden_layers, -2) - 1]
    scores = CLIPLayerView(layer).cls_attention(layer_input)[0].sum(dim=1)[:, 1:]
    for f in range(FRAMES):
        local = kept[f] - f * PER_FRAME
        assert local.min() >= -1 and local.max() < PER_FRAME - 1, f"frame {f} keeps another frame's tokens"
        top = torch.topk(scores[f], dominant - 1).indices.sort().values
        assert local[:dominant].tolist() == [-1, *top.tolist()], f"frame {f}"
    assert len({tuple((kept[f] - f * PER_FRAME).tolist()) for f in range(FRAMES)}) > 1  # frames choose apart


def test_visiondrop_keeps_the_same_tokens_whatever_the_question(tiny_video):
    """VisionDrop scores visual tokens by visual queries only: another question keeps the same tokens at every
    stage (FastV, scoring with the last text token, does not)."""
    videos = clips(1, seed=9)
    questions = [video_prompt([7, 8, 9]), video_prompt([21, 22, 23, 24, 25])]
    for config, same in (("visiondrop/video_llava_256.yaml", True), ("fastv/video_llava_256.yaml", False)):
        model = pruned(tiny_video, config)
        kept = []
        for ids in questions:
            model(ids[None], images=videos)
            kept.append([o[0].tolist() for o in model.last_stats.stage_origins])
        assert len(kept[0]) > 1
        assert (kept[0] == kept[1]) == same, config


def test_image_tower_keeps_working_under_pruning(tiny_video, loaded):
    """Images go through the (pruning-aware) image tower: unpruned they equal the plain model; an encoder stage
    reduces an image as one unit (VisionZip: 27 + 5 of CLS + 256 patches)."""
    ids = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 13, 7]])
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    unpruned = pruned(tiny_video, "none/video_llava.yaml")
    torch.testing.assert_close(unpruned(ids, images=image), loaded(ids, images=image))
    model = pruned(tiny_video, "visionzip/video_llava_256.yaml")
    model(ids, images=image)
    assert model.last_stats.visual_per_layer[:, 0].tolist() == [32] * 32
    assert model.last_stats.stage_origins[0][0][0] == -1
