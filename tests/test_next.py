"""LLaVA-NeXT (anyres): feature merging by hand, the tiny v1.6-layout checkpoint, and the NeXT schedules by hand
(the invariants every method keeps on every config are tests/test_contract.py's)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import TEST_DEVICE, TEST_DTYPE, assert_close, encode_prompt, right_pad, stand_in_picture
from PIL import Image
from safetensors.torch import load_file

from llava.mm_utils import anyres_token_count, get_anyres_image_grid_shape, preprocess_images, process_anyres_image
from llava.model.anyres import merge_flat, merge_multicrop, merge_spatial
from llava.model.builder import load_pretrained_model
from llava.model.tiny import NEXT_PINPOINTS, tiny_llava_next_path
from llava.model.visiondrop_llava import load_model_for_eval
from visiondrop.config import load_config, validate_budget
from visiondrop.models import MODELS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SIDE, P = 24, 576
# Per-layer group counts on a 2x2 grid (n_sub = 5), docs/methods.md, 'Schedules'; a 1x2 grid (n_sub = 3) keeps
# 3/5 of them.
NEXT_COUNTS = {640: [960, 705, 515, 380], 320: [480, 350, 260, 190], 160: [240, 175, 130, 95]}


@pytest.fixture(scope="module")
def next_path(tiny_path) -> Path:
    return tiny_llava_next_path(tiny_path.parent)


@pytest.fixture(scope="module")
def next_model(next_path):
    tok, model, _, _ = load_model_for_eval(str(next_path), None, dtype=TEST_DTYPE, device=TEST_DEVICE)
    return tok, model


def install(model, config: str | None, overrides=()):
    model.set_pruning(load_config(CONFIGS / config if config else None, list(overrides)))


def pixels(model, images: list[Image.Image]) -> list[torch.Tensor]:
    return preprocess_images(images, "anyres", 336, model.config.image_grid_pinpoints)


# ---- anyres geometry by hand (docs/pipeline.md, 'Preprocessing') -----------------------------------------------

# (w, h), grid (g_w, g_h), kept map rows x cols after unpad, LLM tokens (576 + rows * (cols + 1))
TABLE = [((672, 672), (2, 2), (48, 48), 2928), ((640, 480), (2, 2), (36, 48), 2340),
         ((480, 640), (2, 2), (48, 36), 2352), ((1920, 1080), (2, 2), (28, 48), 1948),
         ((336, 336), (1, 2), (24, 24), 1176), ((1000, 200), (3, 1), (14, 72), 1598)]


def map_origin(r: int, c: int, g_w: int) -> int:
    """Image-wide origin of cell (r, c) of the full crop map: sub-image 1 + crop index, patch (r%24, c%24)."""
    return (1 + (r // SIDE) * g_w + c // SIDE) * P + (r % SIDE) * SIDE + c % SIDE


@pytest.mark.parametrize("size,grid,kept,tokens", TABLE)
def test_spatial_unpad_by_hand(size, grid, kept, tokens):
    g_w, g_h = grid
    assert get_anyres_image_grid_shape(size, NEXT_PINPOINTS, 336) == grid
    assert process_anyres_image(stand_in_picture(*size), NEXT_PINPOINTS).shape[0] == 1 + g_w * g_h
    n_sub = 1 + g_w * g_h
    features = torch.randn(n_sub, P, 8)
    origin = torch.arange(P).expand(n_sub, P)
    newline = torch.full((8,), 7.0)
    out, ids = merge_spatial(features, origin, grid, SIDE, size, newline)
    assert out.shape == (tokens, 8) and tokens == anyres_token_count(size, NEXT_PINPOINTS)
    rows, cols = kept
    assert int((ids == -2).sum()) == rows and tokens == P + rows * (cols + 1)
    full_h, full_w = g_h * SIDE, g_w * SIDE
    top, left = (full_h - rows) // 2, (full_w - cols) // 2
    expected = list(range(P))
    for r in range(top, top + rows):
        expected += [map_origin(r, c, g_w) for c in range(left, left + cols)] + [-2]
    assert ids.tolist() == expected
    assert_close(out[: P], features[0], atol=0, rtol=0)
    assert torch.equal(out[ids == -2], newline.expand(rows, 8))
    u, j = ids[P] // P, ids[P] % P
    assert_close(out[P], features[u, j], atol=0, rtol=0)


def test_flat_and_spatial_keep_every_token():
    features, origin = torch.randn(5, P, 8), torch.arange(P).expand(5, P)
    flat, flat_ids = merge_flat(features, origin, SIDE)
    assert flat.shape[0] == 5 * P == 2880 and flat_ids.tolist() == list(range(2880))
    spatial, ids = merge_spatial(features, origin, (2, 2), SIDE)
    assert spatial.shape[0] == 2880
    assert ids[P:].tolist() == [map_origin(r, c, 2) for r in range(48) for c in range(48)]


def test_multicrop_layout_by_hand():
    # side 2 (4 patches), 2x1 grid; per sub-image [CLS, 1 dominant patch, 1 contextual]; row = 10 u + t.
    features = (10 * torch.arange(3)[:, None] + torch.arange(3)[None]).float()[..., None]
    origin = torch.tensor([[-1, 2, 0], [-1, 3, 1], [-1, 0, 2]])
    out, ids = merge_multicrop(features, origin, (2, 1), 2, dominant=2)
    # full map 2 x 4: crop 1 patch 3 -> (1, 1) = raster 5; crop 2 patch 0 -> (0, 2) = raster 2: crop 2 first.
    assert out[:, 0].tolist() == [0, 1, 2, 21, 11, 10, 20, 12, 22]
    assert ids.tolist() == [-1, 2, 0, 8, 7, -1, -1, 5, 10]


# ---- the tiny NeXT checkpoint ----------------------------------------------------------------------------------

def test_checkpoint_layout_and_clean_load(next_path, next_model, tmp_path):
    file_keys = set(load_file(str(next_path / "model.safetensors")))
    prefix = "model.vision_tower.vision_tower.vision_model."
    assert "model.image_newline" in file_keys and f"{prefix}encoder.layers.23.mlp.fc1.weight" in file_keys
    config = json.loads((next_path / "config.json").read_text())
    assert config["unfreeze_mm_vision_tower"] and "vision_tower_config" not in config
    assert config["image_aspect_ratio"] == "anyres" and config["mm_patch_merge_type"] == "spatial_unpad"
    _, model = next_model
    loaded = {k.replace("model.vision_tower.vision_tower.", prefix) for k in model.state_dict()}
    assert loaded == file_keys  # no missing, no unexpected keys
    stored = load_file(str(next_path / "model.safetensors"))
    weight = "encoder.layers.0.self_attn.q_proj.weight"
    tower = model.get_vision_tower().vision_tower.state_dict()
    assert_close(tower[weight].cpu().float(), stored[prefix + weight].float(), atol=0, rtol=0)
    clip = load_file(str(next_path.parent / "tiny-clip-vit-336" / "model.safetensors"))
    assert not torch.equal(stored[prefix + weight], clip["vision_model." + weight])  # from the checkpoint
    assert_close(model.model.image_newline.cpu().float(), stored["model.image_newline"].float())
    moved = tmp_path / "llava-next-moved"  # mm_vision_tower no longer resolves: config.json must give the shape
    shutil.copytree(next_path, moved)
    with pytest.raises(FileNotFoundError, match="vision_tower_config"):
        load_pretrained_model(str(moved), dtype=torch.float32)
    clip_config = json.loads((next_path.parent / "tiny-clip-vit-336" / "config.json").read_text())["vision_config"]
    (moved / "config.json").write_text(json.dumps({**config, "vision_tower_config": clip_config}))
    _, again, _, _ = load_pretrained_model(str(moved), dtype=torch.float32)
    assert_close(again.get_vision_tower().vision_tower.state_dict()[weight], stored[prefix + weight])


def test_spliced_length_and_batch_splicing(next_model):
    tok, model = next_model
    install(model, None)
    sizes = [(640, 480), (1000, 200)]
    images = [stand_in_picture(*s, seed=i) for i, s in enumerate(sizes)]
    prompts = [encode_prompt(tok, "<image>\nWhat is this?"), encode_prompt(tok, "<image>\nIs it sunny today?")]
    ids, mask = right_pad(prompts)
    batch = model.prepare_multimodal_batch(ids, mask, pixels(model, images), sizes)
    for i, size in enumerate(sizes):
        n_visual = anyres_token_count(size, NEXT_PINPOINTS)
        assert int(batch.visual_len[i]) == n_visual and int(batch.lengths[i]) == len(prompts[i]) - 1 + n_visual
        single = model.prepare_multimodal_batch(prompts[i][None], images=pixels(model, images[i:i + 1]),
                                                image_sizes=[size])
        assert_close(batch.hidden[i, : int(batch.lengths[i])], single.hidden[0], atol=1e-5, rtol=0)
    assert batch.visual_units.tolist() == [5, 4]


# ---- VisionDrop's NeXT schedules ------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [640, 320, 160])
def test_counts_meet_the_budget_and_scale_with_the_grid(next_model, budget):
    tok, model = next_model
    cfg = load_config(CONFIGS / "visiondrop" / f"llava_next_{budget}.yaml")
    model.set_pruning(cfg)
    expected = [n for n in NEXT_COUNTS[budget] for _ in range(8)]
    assert validate_budget(cfg) == expected
    sizes = [(640, 480), (336, 336)]  # 2x2 grid (n_sub 5) and 1x2 grid (n_sub 3)
    prompts = [encode_prompt(tok, "<image>\nWhat is on the table?"), encode_prompt(tok, "<image>\nWhy?")]
    ids, mask = right_pad(prompts)
    images = pixels(model, [stand_in_picture(*s, seed=5) for s in sizes])
    model(ids, images=images, image_sizes=sizes, attention_mask=mask)
    stats = model.last_stats
    assert stats.visual_per_layer[:, 0].tolist() == expected
    assert stats.visual_per_layer[:, 1].tolist() == [n * 3 // 5 for n in expected]
    assert stats.average_visual_tokens == [budget, budget * 3 / 5]
    origin = stats.stage_origins[0][0]  # multi-crop layout of the 2x2 image
    d, c = cfg.options.encoder.dominant, cfg.options.encoder.contextual
    assert origin[0] == -1 and bool((origin[1: d + c] < P).all())
    patches = origin[d + c: d + c + 4 * (d - 1)]
    crop, j = patches // P - 1, patches % P
    raster = ((crop // 2) * SIDE + j // SIDE) * 2 * SIDE + (crop % 2) * SIDE + j % SIDE
    assert bool((raster.diff() > 0).all())
    assert origin[d + c + 4 * (d - 1): 5 * d + c].tolist() == [-1] * 4
    assert (origin[5 * d + c:] // P).tolist() == [u for u in (1, 2, 3, 4) for _ in range(c)]


# ---- baselines on NeXT: VisionZip per sub-image, FastV per-sample ratio, PDrop on the measured N0 -----------

def groups(*pairs: tuple[int, int]) -> list[int]:
    """[(count, n_layers), ...] -> per-layer visual counts."""
    return [count for count, n in pairs for _ in range(n)]


# Nominal geometry (N = 2880 = 5 x 576), docs/methods.md, 'FastV', 'PDrop' and 'VisionZip'.
NEXT_BASELINES = {
    ("fastv", 640): groups((2880, 2), (491, 30)), ("fastv", 320): groups((2880, 2), (149, 30)),
    ("pdrop", 640): groups((2880, 2), (1209, 6), (508, 8), (213, 16)),
    ("pdrop", 320): groups((2880, 2), (552, 6), (106, 8), (20, 16)),
    **{("visionzip", b): groups((b, 32)) for b in (640, 320, 160)},
}
# At 320, by hand, for the stock segments of a 640x480 image (2x2 grid: 2340 tokens) and a 336x336 image (1x2
# grid: 1176): FastV keeps round(N * (1 - 0.9483)); PDrop floor(N * 0.192^k); VisionZip's multi-crop segment
# is n_sub x (54 + 10) in every layer (5 and 3 sub-images).
MEASURED_320 = {
    "fastv": (groups((2340, 2), (121, 30)), groups((1176, 2), (61, 30))),
    "pdrop": (groups((2340, 2), (449, 6), (86, 8), (16, 16)), groups((1176, 2), (225, 6), (43, 8), (8, 16))),
    "visionzip": (groups((320, 32)), groups((192, 32))),
}


def test_next_baseline_configs_meet_the_budget_and_160_is_infeasible():
    from visiondrop.config import ConfigError
    from visiondrop.methods.visionzip import VisionZip, VisionZipOptions

    for (method, budget), expected in NEXT_BASELINES.items():
        cfg = load_config(CONFIGS / method / f"llava_next_{budget}.yaml")
        assert cfg.model == "llava-next-7b" and cfg.derived
        assert validate_budget(cfg) == expected
        assert abs(sum(expected) / 32 - budget) <= max(1.0, 0.01 * budget)
    for method in ("fastv", "pdrop"):
        assert not (CONFIGS / method / "llava_next_160.yaml").exists()
        with pytest.raises(ConfigError, match=f"160 is infeasible for {method} on llava-next-7b.* "
                                              "at least 2\\*2880/32 = 180.0"):
            load_config(CONFIGS / method / "llava_next_320.yaml", ["budget=160"])
    with pytest.raises(ConfigError, match="at least 2\\*2880/32 = 180.0"):  # keep derived from the budget
        load_config(raw={"method": "fastv", "model": "llava-next-7b", "budget": 160})
    with pytest.raises(ConfigError, match="not both"):
        load_config(raw={"method": "fastv", "model": "llava-next-7b", "keep": 149, "prune_ratio": 0.9483})
    vz = VisionZip(VisionZipOptions(dominant=54, contextual=10))  # per sub-image: 1 (576), 3 (1728), 5 (2880)
    next_geometry = MODELS["llava-next-7b"].geometry
    assert [vz.tower_tokens(replace(next_geometry, units=u)) for u in (1, 3, 5)] == [64, 192, 320]
    with pytest.raises(ValueError, match="exceeds the 577 tower tokens per unit"):
        VisionZip(VisionZipOptions(dominant=500, contextual=100)).tower_tokens(next_geometry)


@pytest.mark.parametrize("method", ["visionzip", "fastv", "pdrop"])
def test_next_baselines_measure_the_counts_by_hand(next_model, method):
    tok, model = next_model
    install(model, f"{method}/llava_next_320.yaml")
    sizes = [(640, 480), (336, 336)]  # 2x2 grid (n_sub 5) and 1x2 grid (n_sub 3)
    prompts = [encode_prompt(tok, "<image>\nWhat is on the table?"), encode_prompt(tok, "<image>\nWhy?")]
    ids, mask = right_pad(prompts)
    images = pixels(model, [stand_in_picture(*s, seed=11) for s in sizes])
    model(ids, images=images, image_sizes=sizes, attention_mask=mask)
    for i, expected in enumerate(MEASURED_320[method]):
        assert model.last_stats.visual_per_layer[:, i].tolist() == expected
