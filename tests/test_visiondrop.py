"""VisionDrop: schedules, selection and merging by hand, and its options end to end on the tiny model (the
invariants every method keeps on every config are tests/test_contract.py's)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import assert_close, encode_prompt, right_pad, stand_in_image

from llava.model.multimodal_encoder.clip_encoder import CLIPLayerView
from llava.model.visiondrop_llava import official_flags_to_overrides
from visiondrop.config import ConfigError, load_config, validate_budget
from visiondrop.merging import ascending_split, contextual_merge, top_indices_ascending
from visiondrop.scoring import attention_to_columns, take_rows

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "visiondrop"


@pytest.fixture(scope="module")
def vd64(load_tiny):
    return load_tiny(CONFIGS / "llava15_64.yaml")


@pytest.mark.parametrize("budget,per_stage", [(192, [288, 211, 155, 114]), (128, [192, 141, 103, 76]),
                                              (64, [96, 70, 52, 38]), (32, [48, 35, 26, 19])])
def test_shipped_schedules_meet_their_budget(budget, per_stage):
    counts = validate_budget(load_config(CONFIGS / f"llava15_{budget}.yaml"))
    assert counts == [n for n in per_stage for _ in range(8)]
    assert sum(counts) / 32 == budget


def test_official_flags_give_the_released_setting():
    flags = official_flags_to_overrides(42, 6, "[8,16,24]", "[[30,5],[22,4],[16,3]]")
    cfg = load_config(CONFIGS / "llava15_64.yaml", flags + ["budget=32"])
    assert validate_budget(cfg)[::8] == [48, 35, 26, 19]


@pytest.mark.parametrize("override,message", [
    (["llm.merge_all=true"], "unknown key 'llm.merge_all'"),
    (["llm.tokens=[[90,9],[45,7],[33,5]]"],
     r"llm.tokens\[0\] = \[90, 9\] keeps 99 tokens but the stage receives only 96"),
    (["budget=60"], "averages 64.00 .* not the stated 60"),
    (["llm.layers=[8,16,40]"], "after layer 40 but the model has 32 layers"),
    (["llm.scoring=mean"], "llm.scoring='mean'"),
    (["encoder.dominant=600"], "encoder.dominant=600"),
    (["method=fastvv"], "unknown method 'fastvv'"),
])
def test_bad_configs_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "llava15_64.yaml", override)


def test_contextual_merge_by_hand():
    tokens = torch.tensor([[1.0, 0], [2, 0], [3, 0], [0, 1], [0, 2], [4, 4]])
    metric = torch.tensor([[1.0, 0], [1, 0.1], [0.1, 1], [0, 1], [1, 0.2], [0.2, 1]])
    merged, targets = contextual_merge(tokens, metric, 2)
    # step = 6 // 2 = 3: targets are rows 0 and 3; rows 1, 4 look like row 0, rows 2, 5 like row 3.
    assert targets.tolist() == [0, 3]
    expected = torch.tensor([[1 + (2 + 0) / 2, 0 + (0 + 2) / 2], [0 + (3 + 4) / 2, 1 + (0 + 4) / 2]])
    assert_close(merged, expected)
    weighted, _ = contextual_merge(tokens, metric, 2, fusion="size_weighted")
    assert_close(weighted, torch.tensor([[3 / 3, 2 / 3], [7 / 3, 5 / 3]]))


def test_ascending_split_equals_sorting():
    chosen = torch.tensor([[4, 0, 2], [5, 3, 1]])
    first, rest = ascending_split(6, chosen)
    assert first.tolist() == [[0, 2, 4], [1, 3, 5]] and rest.tolist() == [[1, 3, 5], [0, 2, 4]]
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 300, generator=g)
    top = torch.topk(scores, 120, dim=-1).indices
    first, rest = ascending_split(300, top)
    assert torch.equal(first, top.sort(dim=-1).values)
    assert torch.equal(torch.cat([first, rest], dim=-1).sort(dim=-1).values, torch.arange(300).expand(4, -1))
    assert bool((rest.diff(dim=-1) > 0).all())


def test_take_rows_gathers_per_row():
    x = torch.arange(2 * 5 * 3).view(2, 5, 3)
    rows = torch.tensor([[4, 0], [1, 1]])
    expected = torch.stack([x[0, [4, 0]], x[1, [1, 1]]])
    assert torch.equal(take_rows(x, rows), expected)
    assert torch.equal(take_rows(x.transpose(0, 1).contiguous().transpose(0, 1), rows), expected)  # strided
    wide = torch.arange(2 * 7 * 3).view(2, 7, 3)
    assert torch.equal(take_rows(wide[:, 2:], rows), torch.stack([wide[0, [6, 2]], wide[1, [3, 3]]]))  # a slice
    assert torch.equal(take_rows(x[:1].expand(2, -1, -1), rows), torch.stack([x[0, [4, 0]], x[0, [1, 1]]]))
    assert torch.equal(take_rows(x[0], torch.tensor([3, 1])), x[0, [3, 1]])


def test_released_encoder_stride_example():
    # docs/methods.md, 'Encoder stage (s0)': B = 32, d0 = 42, |R| = 535, c0 = 6 -> step 89, targets 0, 89, ..., 445.
    _, targets = contextual_merge(torch.randn(535, 4), torch.randn(535, 4), 6)
    assert targets.tolist() == [0, 89, 178, 267, 356, 445]


def test_visual_scores_by_hand():
    torch.manual_seed(0)
    q, k = torch.randn(3, 2, 4), torch.randn(5, 2, 4)  # queries at positions 2, 3, 4 over 5 keys, 2 heads
    query_pos = torch.tensor([2, 3, 4])
    expected = torch.zeros(3)
    for qi, pos in enumerate(query_pos.tolist()):
        for h in range(2):
            logits = [float(q[qi, h] @ k[j, h]) / 2.0 for j in range(pos + 1)]
            z = sum(math.exp(x) for x in logits)
            for c, j in enumerate(range(2, 5)):
                if j <= pos:
                    expected[c] += math.exp(logits[j]) / z / 2 / 3
    for memory_mib in (1e-4, 2.5e-4, 64):  # one query row per chunk, four rows, everything at once
        assert_close(attention_to_columns(q, k, query_pos, slice(2, 5), memory_mib), expected)
    assert top_indices_ascending(torch.tensor([0.1, 0.9, 0.3, 0.8]), 2).tolist() == [1, 3]


def test_clip_cls_attention_equals_clip_attention_weights(vd64):
    tower = vd64[1].get_vision_tower().vision_tower
    tower.config._attn_implementation = "eager"
    try:
        out = tower(stand_in_image(7).to(tower.device), output_hidden_states=True, output_attentions=True)
    finally:
        tower.config._attn_implementation = "sdpa"
    probs, _ = CLIPLayerView(tower.encoder.layers[-2]).cls_attention(out.hidden_states[-3])
    assert_close(probs, out.attentions[-2][:, :, 0], atol=1e-6, rtol=0)


def kept_tokens(model, tok, question: str, seed: int = 13) -> list[list[int]]:
    model(encode_prompt(tok, question)[None], images=stand_in_image(seed))
    return [o[0].tolist() for o in model.last_stats.stage_origins]


def test_visual_only_selection_ignores_the_question(vd64, load_tiny):
    tok, model = vd64
    a = kept_tokens(model, tok, "<image>\nIs it overcast?")
    b = kept_tokens(model, tok, "<image>\nWhat is the man holding in his left hand on the table?")
    assert a == b
    _, guided = load_tiny(CONFIGS / "llava15_64.yaml", ["llm.scoring=text"])
    c = kept_tokens(guided, tok, "<image>\nIs it overcast?")
    d = kept_tokens(guided, tok, "<image>\nWhat is the man holding in his left hand on the table?")
    assert c[0] == d[0]  # the encoder stage never sees the text
    assert c[1:] != d[1:]


def test_merge_off_keeps_counts_and_changes_tokens(load_tiny, vd64, gqa_questions):
    tok, model = vd64
    _, no_merge = load_tiny(CONFIGS / "llava15_64.yaml", ["merge=false"])
    ids, image = encode_prompt(tok, gqa_questions[5]["text"]), stand_in_image(15)
    a, b = model(ids[None], images=image), no_merge(ids[None], images=image)
    assert torch.equal(model.last_stats.visual_per_layer, no_merge.last_stats.visual_per_layer)
    assert not torch.allclose(a[0, -1], b[0, -1])


def test_mixed_batch_takes_the_per_sample_path(vd64):
    tok, model = vd64
    prompts = [encode_prompt(tok, "What is in the picture?\n<image>"), encode_prompt(tok, "<image>\nIs it red?")]
    images = [stand_in_image(16), stand_in_image(17)]
    single = [model.generate(p[None], images=img, max_new_tokens=4, return_logits=True)[1]
              for p, img in zip(prompts, images)]
    ids, mask = right_pad(prompts)
    _, logits = model.generate(ids, images=torch.cat(images), attention_mask=mask, max_new_tokens=4,
                               return_logits=True)
    for i, l1 in enumerate(single):
        assert_close(logits[i, : l1.shape[1]], l1[0], atol=1e-4, rtol=0)
    assert model.last_stats.visual_per_layer[:, 0].tolist() == model.last_stats.visual_per_layer[:, 1].tolist()


def test_clean_options_change_only_what_they_name(load_tiny, vd64, gqa_questions):
    tok, model = vd64
    ids, image = encode_prompt(tok, gqa_questions[6]["text"]), stand_in_image(18)
    model(ids[None], images=image)
    faithful = [o[0].tolist() for o in model.last_stats.stage_origins]
    # VD-8: original positions; the first LLM stage scores on identical positions, so it keeps the same tokens,
    # and cached decoding still equals recomputation (decode positions follow each group's last position).
    _, original = load_tiny(CONFIGS / "llava15_64.yaml", ["llm.positions=original"])
    tokens, logits = original.generate(ids[None], images=image, max_new_tokens=3, return_logits=True)
    assert [o[0].tolist() for o in original.last_stats.stage_origins][:2] == faithful[:2]
    for step in range(tokens.shape[1]):
        recomputed = original(torch.cat([ids, tokens[0, :step].cpu()])[None], images=image)[0, -1]
        assert_close(recomputed, logits[0, step], atol=1e-5, rtol=0)
    # VD-2: divide key j's score by the N - j queries that can see it; the encoder stage is untouched.
    _, visible = load_tiny(CONFIGS / "llava15_64.yaml", ["llm.divisor=visible"])
    visible(ids[None], images=image)
    cleaned = [o[0].tolist() for o in visible.last_stats.stage_origins]
    assert cleaned[0] == faithful[0] and cleaned[1] != faithful[1]
    assert visible.last_stats.visual_per_layer.equal(model.last_stats.visual_per_layer)
