"""Qwen2.5-VL on our decoder loop equals transformers' Qwen2_5_VLForConditionalGeneration on the tiny random
checkpoint (two images of different sizes in a padded batch of 2), and configs of another family are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_close
from PIL import Image
from transformers import Qwen2_5_VLForConditionalGeneration

from llava.model.builder import load_pretrained_model
from llava.model.family import QWEN_FAMILY
from llava.model.language_model.qwen2_5_vl import (
    QwenDecoderLayerView,
    QwenVLForCausalLM,
    build_inputs,
    image_span,
    load_qwen_model,
    method_rope,
)
from visiondrop.config import PruningConfig

NEW_TOKENS = 5


@pytest.fixture(scope="module")
def qwen_path(tmp_path_factory):
    from llava.model.tiny_qwen import tiny_qwen_path

    return tiny_qwen_path(tmp_path_factory.mktemp("tiny-qwen-cache"))


@pytest.fixture(scope="module")
def ours(qwen_path):
    return load_pretrained_model(str(qwen_path), dtype=torch.float32)


@pytest.fixture(scope="module")
def reference(qwen_path):
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen_path, dtype=torch.float32,
                                                              attn_implementation="sdpa").eval()


def stand_in_images() -> list[Image.Image]:
    """Two deterministic random RGB images of different sizes (both span several 112-px attention windows)."""
    return [Image.fromarray(np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8))
            for seed, (h, w) in enumerate([(168, 224), (196, 140)])]


@pytest.fixture(scope="module")
def inputs(ours, gqa_questions):
    tokenizer, _, image_processor, _ = ours
    questions = [q["text"].replace("<image>\n", "") for q in gqa_questions[:2]]
    return build_inputs(tokenizer, image_processor, questions, stand_in_images())


def per_sample(inputs, reference):
    """Each sample alone (no padding), as transformers' model takes it."""
    ids, mask, images = inputs
    grids = images["image_grid_thw"]
    starts = [0, *grids.prod(-1).cumsum(0).tolist()]
    for b in range(ids.shape[0]):
        row = ids[b: b + 1, : int(mask[b].sum())]
        token_types = (row == reference.config.image_token_id).int()
        yield row, dict(input_ids=row, pixel_values=images["pixel_values"][starts[b]: starts[b + 1]],
                        image_grid_thw=grids[b: b + 1], mm_token_type_ids=token_types)


def test_dispatch_loads_the_family(ours, qwen_path):
    tokenizer, model, image_processor, context_len = ours
    assert isinstance(model, QwenVLForCausalLM) and context_len == 4096
    assert len(model.model.layers) == 28 and len(model.model.visual.blocks) == 32
    small = load_qwen_model(qwen_path, dtype=torch.float32, max_pixels=56 * 56)[2]
    big, few = (ip(images=stand_in_images()[:1])["image_grid_thw"][0].prod() for ip in (image_processor, small))
    assert few < big and few * 14 * 14 <= 56 * 56


def test_splice_and_positions_equal_transformers_rope_index(ours, reference, inputs):
    ids, mask, images = inputs
    batch = ours[1].prepare_multimodal_batch(ids, mask, images)
    n_tokens = (images["image_grid_thw"].prod(-1) // 4).tolist()
    assert batch.visual_len.tolist() == n_tokens and batch.visual_units.tolist() == [1, 1]
    assert batch.visual_start.tolist() == [image_span(r, reference.config.image_token_id)[0] for r in ids]
    expected, _ = reference.model.get_rope_index(ids, (ids == reference.config.image_token_id).int(),
                                                 image_grid_thw=images["image_grid_thw"], attention_mask=mask)
    real = mask.bool()
    assert torch.equal(batch.positions[:, real], expected[:, real])
    assert not torch.equal(batch.positions[0], batch.positions[1])  # the image tokens' axes differ


def test_unpruned_logits_equal_transformers(ours, reference, inputs):
    ids, mask, images = inputs
    logits = ours[1](ids, images=images, attention_mask=mask)
    assert mask[0].sum() != mask[1].sum()  # the batch is padded
    for b, (row, kwargs) in enumerate(per_sample(inputs, reference)):
        with torch.no_grad():
            expected = reference(**kwargs).logits[0]
        assert_close(logits[b, : row.shape[1]], expected, atol=1e-4, rtol=1e-4)


def test_greedy_tokens_equal_transformers(ours, reference, inputs):
    ids, mask, images = inputs
    tokens = ours[1].generate(ids, images=images, attention_mask=mask, max_new_tokens=NEW_TOKENS)
    for b, (row, kwargs) in enumerate(per_sample(inputs, reference)):
        expected = reference.generate(**kwargs, attention_mask=torch.ones_like(row), do_sample=False,
                                      max_new_tokens=NEW_TOKENS)[0, row.shape[1]:]
        assert torch.equal(tokens[b, : expected.numel()], expected)


def test_cached_decode_equals_full_recompute(ours, inputs):
    ids, mask, images = inputs
    model = ours[1]
    cached, cached_logits = model.generate(ids, images=images, attention_mask=mask, max_new_tokens=NEW_TOKENS,
                                           eos_token_id=-1, return_logits=True)
    full, full_logits = model.generate(ids, images=images, attention_mask=mask, max_new_tokens=NEW_TOKENS,
                                       eos_token_id=-1, return_logits=True, use_cache=False)
    assert cached.shape == (2, NEW_TOKENS) and torch.equal(cached, full)
    assert_close(cached_logits, full_logits, atol=1e-4, rtol=1e-4)


def test_method_rope_merges_the_sections_by_hand(ours, inputs):
    """An image token at (t, h, w) takes the temporal angle in the first section's frequencies, the height one in
    the second's, the width one in the third's; the view rotates with these tables."""
    ids, mask, images = inputs
    model = ours[1]
    batch = model.prepare_multimodal_batch(ids, mask, images)
    cos, sin = method_rope(model, batch)
    rotary = model.model.rotary_emb
    sections = rotary.mrope_section
    j = int(batch.visual_start[0]) + 7  # an image token off the first row and column
    t, h, w = batch.positions[:, 0, j].tolist()
    assert len({t, h, w}) > 1
    axis = torch.cat([torch.full((n,), float(p)) for n, p in zip(sections, (t, h, w))])
    angles = (axis * rotary.inv_freq).repeat(2)
    assert_close(cos[0, j], angles.cos(), atol=1e-6, rtol=0)
    assert_close(sin[0, j], angles.sin(), atol=1e-6, rtol=0)
    view = QwenDecoderLayerView(model.model.layers[0], 0)
    keys = view.keys(view.normed(batch.hidden))
    assert keys.shape[-2:] == (2, view.head_dim)
    rotated = view.rotate(keys, cos, sin)
    half = view.head_dim // 2
    first, second = keys[0, j, 0, :half], keys[0, j, 0, half:]
    by_hand = torch.cat([first * angles.cos()[:half] - second * angles.sin()[:half],
                         second * angles.cos()[half:] + first * angles.sin()[half:]])
    assert_close(rotated[0, j, 0], by_hand, atol=1e-5, rtol=0)


def test_several_images_in_one_prompt_are_refused():
    with pytest.raises(ValueError, match="one image per sample"):
        image_span(torch.tensor([1, 9, 9, 2, 9, 3]), 9)


def test_llava_config_on_a_qwen_checkpoint_is_refused(qwen_path):
    from llava.model.visiondrop_llava import load_model_for_eval

    with pytest.raises(ValueError, match=rf"llava-v1.5-7b.*{QWEN_FAMILY}"):
        load_model_for_eval(str(qwen_path), "configs/none/llava15.yaml", dtype=torch.float32)


def test_qwen_config_on_a_llava_checkpoint_is_refused(load_tiny):
    _, model = load_tiny()
    with pytest.raises(ValueError, match=rf"{QWEN_FAMILY}.*llava"):
        model.set_pruning(PruningConfig(method="none", model=QWEN_FAMILY))


def test_encoder_scores_by_hand(ours, inputs):
    """With the last full-attention block's queries zeroed every token of an image receives 1 / (its patches)
    from each query: each image's merged tokens score exactly that, per image (not over the batch)."""
    from llava.model.qwen_vision_scores import visual_token_scores

    _, _, images = inputs
    visual = ours[1].model.visual
    qkv = visual.blocks[visual.fullatt_block_indexes[-1]].attn.qkv
    features, scores = visual_token_scores(visual, images["pixel_values"], images["image_grid_thw"])
    patches = images["image_grid_thw"].prod(-1).tolist()
    assert [s.numel() for s in scores] == [p // 4 for p in patches]
    assert not torch.allclose(scores[0], torch.full_like(scores[0], 1 / patches[0]))
    assert_close(features, visual(images["pixel_values"], grid_thw=images["image_grid_thw"]).pooler_output)
    alone = visual_token_scores(visual, images["pixel_values"][patches[0]:], images["image_grid_thw"][1:])[1][0]
    assert_close(alone, scores[1], atol=1e-7, rtol=1e-5)  # the second image's offsets in the batch
    saved = qkv.weight.detach().clone(), qkv.bias.detach().clone()
    dim = qkv.out_features // 3
    try:
        with torch.no_grad():
            qkv.weight[:dim].zero_()
            qkv.bias[:dim].zero_()
        _, uniform = visual_token_scores(visual, images["pixel_values"], images["image_grid_thw"])
    finally:
        with torch.no_grad():
            qkv.weight.copy_(saved[0])
            qkv.bias.copy_(saved[1])
    for s, p in zip(uniform, patches):
        assert_close(s, torch.full_like(s, 1 / p), atol=1e-7, rtol=1e-5)
