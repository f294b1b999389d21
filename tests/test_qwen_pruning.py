"""Pruning on Qwen2.5-VL (tiny random checkpoint): every shipped `qwen2_5_vl*` config keeps the method contract
on two images of different sizes (48 and 35 merged tokens): counts = schedule per sample (counts scaled per image),
cached = recomputed (decode positions under M-RoPE), batch = one by one, full retention = unpruned; VisionDrop's
kept tokens do not depend on the question; the no-CLS encoder stage keeps the tokens the score ranks first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import assert_close
from test_qwen2_5_vl import stand_in_images

from llava.model.language_model.qwen2_5_vl import build_inputs
from visiondrop.config import ConfigError, load_config
from visiondrop.methods.base import scale_pair
from visiondrop.methods.replay import Replay
from visiondrop.models import MODELS, Geometry

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QWEN_CONFIGS = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("qwen2_5_vl*.yaml"))
QUESTIONS = ("What is on the table next to the red cup?", "Is it sunny?")
NEW_TOKENS = 3


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from llava.model.tiny_qwen import tiny_qwen_path
    from llava.model.visiondrop_llava import load_model_for_eval

    path = tiny_qwen_path(tmp_path_factory.mktemp("tiny-qwen-pruning"))
    tokenizer, model, image_processor, _ = load_model_for_eval(str(path), None, dtype=torch.float32)
    return tokenizer, model, image_processor


def sample_inputs(loaded, questions=QUESTIONS, images=None) -> tuple[dict, list[dict]]:
    """generate() arguments of the padded batch and of each sample alone."""
    tokenizer, _, image_processor = loaded
    images = images or stand_in_images()
    ids, mask, processed = build_inputs(tokenizer, image_processor, list(questions), images)
    batch = dict(input_ids=ids, attention_mask=mask, images=processed)
    patches = [0, *processed["image_grid_thw"].prod(-1).cumsum(0).tolist()]
    alone = [dict(input_ids=ids[b: b + 1, : int(mask[b].sum())],
                  images={"pixel_values": processed["pixel_values"][patches[b]: patches[b + 1]],
                          "image_grid_thw": processed["image_grid_thw"][b: b + 1]}) for b in range(len(images))]
    return batch, alone


def install(model, config: str, overrides=()) -> None:
    model.set_pruning(load_config(CONFIGS / config, list(overrides)))


def image_tokens(sample: dict) -> int:
    return int(sample["images"]["image_grid_thw"].prod()) // 4


def expected_counts(model, n_image: int) -> list[int]:
    """The installed method's visual tokens per decoder layer for an image of `n_image` merged tokens."""
    return model.method.layer_counts(Geometry(n_image, 1, len(model.model.layers), tower_cls=False, variable=True))


def kept_origins(model, row: int = 0) -> list[list[int]]:
    return [o[row].tolist() for o in model.last_stats.stage_origins]


def test_every_qwen_method_ships_configs():
    assert {load_config(CONFIGS / c).method for c in QWEN_CONFIGS} == {"none", "visiondrop", "fastv", "pdrop",
                                                                       "visionzip"}


@pytest.mark.parametrize("config", QWEN_CONFIGS)
def test_counts_follow_the_schedule_per_image(loaded, config):
    model = loaded[1]
    install(model, config)
    batch, alone = sample_inputs(loaded)
    model(**batch)
    sizes = [image_tokens(s) for s in alone]
    assert sizes == [48, 35]
    for row, n in enumerate(sizes):
        assert model.last_stats.visual_per_layer[:, row].tolist() == expected_counts(model, n), f"sample {row}"


@pytest.mark.parametrize("config", [*QWEN_CONFIGS, "visiondrop/qwen2_5_vl_11.yaml:llm.positions",
                                    "pdrop/qwen2_5_vl_11.yaml:positions"])
def test_cached_generation_equals_recomputation(loaded, config):
    """The decode token's M-RoPE position (one past the segment's largest real position, on every axis) is the one
    the same token takes as a prompt token: cached logits equal a full pruned forward over prompt + tokens."""
    model = loaded[1]
    config, _, compact = config.partition(":")  # with a key after ':', that key's compact re-indexing
    install(model, config, [f"{compact}=compact"] if compact else [])
    if model.model.method is not None:
        model.model.reduce_stage = Replay(model.model.method)
    for sample in sample_inputs(loaded)[1]:
        tokens, logits = model.generate(**sample, max_new_tokens=NEW_TOKENS, eos_token_id=-1, return_logits=True)
        kept = kept_origins(model)
        prefix = torch.cat([sample["input_ids"][0], tokens[0, :-1]])
        recomputed = model(prefix[None], images=sample["images"])
        assert_close(recomputed[0, -NEW_TOKENS:], logits[0], atol=1e-5, rtol=0)
        assert kept_origins(model) == kept
        if model.model.method is not None:
            model.model.reduce_stage = Replay(model.model.method)


@pytest.mark.parametrize("config", QWEN_CONFIGS)
def test_batch_equals_one_at_a_time(loaded, config):
    """A padded batch of two images of different sizes (the per-row rebuild) gives each sample's tokens, logits
    and kept tokens alone."""
    model = loaded[1]
    install(model, config)
    batch, alone = sample_inputs(loaded)
    single = []
    for sample in alone:
        tokens, logits = model.generate(**sample, max_new_tokens=NEW_TOKENS, eos_token_id=-1, return_logits=True)
        single.append((tokens[0], logits[0], kept_origins(model)))
    tokens, logits = model.generate(**batch, max_new_tokens=NEW_TOKENS, eos_token_id=-1, return_logits=True)
    for row, (one_tokens, one_logits, one_origins) in enumerate(single):
        assert torch.equal(tokens[row], one_tokens)
        assert_close(logits[row], one_logits, atol=1e-4, rtol=0)
        assert kept_origins(model, row) == one_origins


@pytest.mark.parametrize("config", ["visiondrop/qwen2_5_vl_11.yaml", "pdrop/qwen2_5_vl_22.yaml"])
def test_shared_span_batch_equals_one_at_a_time(loaded, config):
    """Two rows with one image and equal prompt lengths take the batched rebuild of the 3-D positions."""
    model = loaded[1]
    install(model, config)
    image = stand_in_images()[:1]
    batch, alone = sample_inputs(loaded, ("Is it red?", "Is it big?"), image * 2)
    model(**batch)
    assert model.last_stats.visual_per_layer[:, 0].tolist() == expected_counts(model, 48)
    tokens, logits = model.generate(**batch, max_new_tokens=NEW_TOKENS, eos_token_id=-1, return_logits=True)
    for row, sample in enumerate(alone):
        one_tokens, one_logits = model.generate(**sample, max_new_tokens=NEW_TOKENS, eos_token_id=-1,
                                                return_logits=True)
        assert torch.equal(tokens[row], one_tokens[0])
        assert_close(logits[row], one_logits[0], atol=1e-4, rtol=0)


FULL_RETENTION = {
    "visiondrop": ["encoder.enabled=false", "llm.tokens=[[1728, 0], [1728, 0], [1728, 0]]"],
    "visionzip": ["dominant=1728", "contextual=0"],  # no CLS on this tower: every token can be dominant
    "fastv": ["prune_ratio=0"],
    "pdrop": ["ratio=1"],
    "none": [],
}


@pytest.mark.parametrize("config", QWEN_CONFIGS)
def test_full_retention_equals_the_unpruned_model(loaded, config):
    model = loaded[1]
    batch, _ = sample_inputs(loaded)
    install(model, "none/qwen2_5_vl.yaml")
    unpruned = model(**batch)
    install(model, config, [*FULL_RETENTION[load_config(CONFIGS / config).method], "budget_ratio=null"])
    logits = model(**batch)
    assert model.last_stats.visual_per_layer.unique().tolist() == [35, 48]
    for row, n_real in enumerate(batch["attention_mask"].sum(dim=1).tolist()):
        assert_close(logits[row, :n_real], unpruned[row, :n_real], atol=1e-6, rtol=0)


@pytest.mark.parametrize("config", ["visiondrop/qwen2_5_vl_11.yaml", "visiondrop/qwen2_5_vl_33.yaml"])
def test_visiondrop_keeps_the_same_tokens_whatever_the_question(loaded, config):
    """Visual-only scores (visual queries, visual keys) never read the text after the image."""
    model = loaded[1]
    install(model, config)
    kept = []
    for question in ("What colour is the car?", "How many people are standing near the old wooden fence today?"):
        model(**sample_inputs(loaded, (question, question))[0])
        kept.append([kept_origins(model, row) for row in range(2)])
    assert kept[0] == kept[1] and len(kept[0][0]) == 4  # after the encoder stage and the three LLM stages


def test_no_cls_encoder_stage_keeps_the_top_scored_tokens(loaded):
    """VisionZip without contextual tokens keeps exactly the merged tokens with the highest received-attention
    score (llava.model.qwen_vision_scores), in order, with their 3-D positions."""
    from llava.model.qwen_vision_scores import visual_token_scores

    model = loaded[1]
    install(model, "visionzip/qwen2_5_vl_33.yaml", ["dominant=300", "contextual=0", "budget_ratio=null"])
    batch, alone = sample_inputs(loaded)
    images = batch["images"]
    _, scores = visual_token_scores(model.model.visual, images["pixel_values"], images["image_grid_thw"])
    spliced = model.prepare_multimodal_batch(batch["input_ids"], batch["attention_mask"], images)
    for row, s in enumerate(scores):
        keep = scale_pair(300, 0, s.numel(), 1728)[0]
        expected = torch.topk(s, keep).indices.sort().values
        assert spliced.origin[row].tolist() == expected.tolist()
        start, w = int(spliced.visual_start[row]), int(images["image_grid_thw"][row, 2]) // 2
        pos = spliced.positions[:, row, start: start + keep]
        assert pos[1].tolist() == (start + expected // w).tolist()
        assert pos[2].tolist() == (start + expected % w).tolist()


def test_scale_pair_keeps_the_total_and_shrinking_schedules():
    assert scale_pair(42, 6, 576, None) == (42, 6)
    assert scale_pair(252, 36, 1728, 1728) == (252, 36)
    assert scale_pair(252, 36, 48, 1728) == (7, 1)  # 288 * 48 / 1728 = 8 in all, 252 * 48 / 1728 = 7 dominant
    assert scale_pair(1, 0, 1, 1728) == (1, 0)  # at least one token
    totals = [sum(scale_pair(d, c, 35, 288)) for d, c in ((183, 27), (135, 21), (99, 15))]
    assert totals == sorted(totals, reverse=True)


def test_budget_ratio_rules():
    assert load_config(CONFIGS / "visiondrop/qwen2_5_vl_11.yaml").budget == pytest.approx(0.111 * 1728)
    assert MODELS["qwen2.5-vl-7b"].geometry.visual_tokens == 1728
    with pytest.raises(ConfigError, match="fixed 576 visual tokens"):
        load_config(CONFIGS / "none/llava15.yaml", ["budget=null", "budget_ratio=0.5"])
    with pytest.raises(ConfigError, match="not both"):
        load_config(CONFIGS / "none/qwen2_5_vl.yaml", ["budget=1728"])
    with pytest.raises(ConfigError, match="averages"):
        load_config(CONFIGS / "visiondrop/qwen2_5_vl_11.yaml", ["budget_ratio=0.2"])


def test_cls_scored_encoder_stages_are_refused(loaded):
    with pytest.raises(NotImplementedError, match="CLS"):
        loaded[1].set_pruning(load_config(None, ["model=qwen2.5-vl-7b"], raw={"method": "vispruner"}))
