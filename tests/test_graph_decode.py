"""Decode over a static KV cache (llava.model.graph_decode): the same tokens and logits as the eager decode with
DynamicCache, for padded batches, pruned and unpruned, across reused buffers; CUDA-graph replay on a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TEST_DEVICE, assert_close, encode_prompt, right_pad, stand_in_image

from llava.model.decoding import decoder, new_cache
from llava.model.graph_decode import DecodeStep, StaticKV

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STEPS = 6
# GQA-style questions of different lengths, hand-written (the padded batch needs unequal prompts).
QUESTIONS = ["<image>\nIs the woman to the left or to the right of the man holding the umbrella?\n"
             "Answer the question using a single word or phrase.",
             "<image>\nWhat is the color of the large vehicle?\nAnswer the question using a single word or phrase.",
             "<image>\nAre there both cups and plates in the picture?",
             "<image>\nWho is wearing the helmet?"]


def generate_both(model, ids, images, mask=None, steps: int = STEPS):
    """(tokens, logits) of the eager decode and of the static-cache decode, EOS ignored."""
    kwargs = dict(images=images, attention_mask=mask, min_new_tokens=steps, max_new_tokens=steps, return_logits=True)
    return model.generate(ids, cuda_graph=False, **kwargs), model.generate(ids, cuda_graph=True, **kwargs)


def padded_batch(tok, questions):
    prompts = [encode_prompt(tok, q) for q in questions]
    ids, mask = right_pad(prompts)
    images = torch.cat([stand_in_image(20 + i) for i in range(len(prompts))])
    return ids, mask, images


@pytest.mark.parametrize("config", [None, "visiondrop/llava15_64.yaml", "fastv/llava15_64.yaml"])
def test_static_decode_equals_eager_decode(load_tiny, config):
    tok, model = load_tiny(None if config is None else CONFIGS / config)
    ids, mask, images = padded_batch(tok, [QUESTIONS[0], "<image>\nWhat color is the car?"])
    assert not bool(mask.all())  # a padded batch: the static masks must hide the padding too
    (t_eager, l_eager), (t_static, l_static) = generate_both(model, ids, images, mask)
    assert torch.equal(t_eager, t_static)
    assert_close(l_static, l_eager, atol=1e-4, rtol=0)


def test_buffers_and_steps_are_reused_across_prompt_lengths(load_tiny):
    tok, model = load_tiny(CONFIGS / "visiondrop" / "llava15_64.yaml")
    graphs = model.decode_graphs
    graphs.clear()
    steps = []
    for question in ("<image>\nIs it red?", "<image>\nIs it big?"):  # 67 and 68 tokens: the same buckets
        ids = encode_prompt(tok, question)[None]
        (t_eager, l_eager), (t_static, l_static) = generate_both(model, ids, stand_in_image(30))
        assert torch.equal(t_eager, t_static)
        assert_close(l_static, l_eager, atol=1e-4, rtol=0)
        steps.append(list(graphs._steps.values()))
    assert len(steps[0]) == len(steps[1]) == 1 and steps[0][0] is steps[1][0]
    n_layers = len(model.model.layers)
    assert len(graphs._buffers) == n_layers  # one key / value pair per layer, shared by both prompts


def test_least_recently_used_steps_and_their_buffers_are_freed(load_tiny):
    tok, model = load_tiny()
    graphs = model.decode_graphs
    graphs.clear()
    for batch in (1, 2, 3):  # three signatures, capacity 2
        ids = encode_prompt(tok, QUESTIONS[1])[None].expand(batch, -1)
        model.generate(ids, images=stand_in_image(31).expand(batch, -1, -1, -1), min_new_tokens=2,
                       max_new_tokens=2, cuda_graph=True)
    assert [sig[0][0][1] for sig in graphs._steps] == [2, 3]  # batch sizes of the kept steps
    graphs.new_cache(1)
    assert {key[1] for key in graphs._buffers} == {2, 3}
    assert isinstance(graphs.new_cache(1), StaticKV)


def test_static_cache_grows_in_buckets(load_tiny):
    tok, model = load_tiny()
    ids = encode_prompt(tok, QUESTIONS[2])[None]
    cache = new_cache(model, STEPS - 1, cuda_graph=True)
    model.model.prefill(model.prepare_multimodal_batch(ids, None, stand_in_image(32), None), cache)
    prompt = ids.shape[1] - 1 + 576
    keys = cache.buffers[0][0]
    assert keys.shape[2] % model.decode_graphs.bucket == 0 and keys.shape[2] >= prompt + STEPS - 1


def test_flash_attention_is_refused(load_tiny):
    tok, model = load_tiny()
    ids = encode_prompt(tok, QUESTIONS[3])[None]
    cache = new_cache(model, 2, cuda_graph=True)
    _, _, segments, _ = model.model.prefill(model.prepare_multimodal_batch(ids, None, stand_in_image(33), None),
                                           cache)
    attn = model.model.config._attn_implementation
    model.model.config._attn_implementation = "flash_attention_2"
    try:
        with pytest.raises(ValueError, match="sdpa or eager"):
            decoder(model, cache, segments, 2)
    finally:
        model.model.config._attn_implementation = attn


@pytest.mark.skipif(TEST_DEVICE != "cuda", reason="CUDA graphs need a GPU")
def test_graph_replay_equals_the_same_step_run_eagerly(load_tiny):
    tok, model = load_tiny(CONFIGS / "visiondrop" / "llava15_64.yaml")
    ids, mask, images = padded_batch(tok, [QUESTIONS[0], "<image>\nHow many dogs?"])
    outputs = []
    for replay in (True, False):
        model.decode_graphs.clear()
        cache = new_cache(model, STEPS, cuda_graph=True)
        batch = model.prepare_multimodal_batch(ids.to(model.device), mask.to(model.device),
                                               images.to(model.device, model.dtype), None)
        _, _, segments, _ = model.model.prefill(batch, cache)
        step = decoder(model, cache, segments, STEPS)
        assert isinstance(step, DecodeStep) and step.replay
        step.replay = replay
        token = torch.tensor([5, 7], device=model.device)
        logits = [step(token + i) for i in range(STEPS)]
        outputs.append(torch.stack(logits))
    assert torch.equal(outputs[0], outputs[1])


def test_fused_decode_layers_give_the_eager_greedy_tokens():
    """The graph decode's fused layers (llava.model.fused_decode, fp16; Triton's interpreter on a CPU), fed their
    own greedy tokens, give the eager path's tokens and logits (padded batch, VisionDrop's pruned segments)."""
    from benchmarks.runner import make_inputs
    from llava.model.decoding import decode_tokens
    from llava.model.random_weights import random_llava
    from visiondrop.config import load_config

    model = random_llava("tiny-llava-v1.5-7b", torch.float16, TEST_DEVICE)
    model.set_pruning(load_config(CONFIGS / "visiondrop" / "llava15_64.yaml"))
    inputs = make_inputs(model, 2, 40)
    mask = torch.ones_like(inputs.input_ids)
    mask[1, -4:] = 0  # the second row is 4 tokens shorter (its image stays)
    steps = 4
    with torch.no_grad():
        eager = model.generate(inputs.input_ids, attention_mask=mask, images=inputs.images, min_new_tokens=steps,
                               max_new_tokens=steps, cuda_graph=False, return_logits=True)
        cache = new_cache(model, steps - 1, cuda_graph=True)
        batch = model.prepare_multimodal_batch(inputs.input_ids, mask, inputs.images, None)
        final, last, segments, _ = model.model.prefill(batch, cache)
        first = model.lm_head(final[torch.arange(2, device=final.device), last]).float()
        step = DecodeStep(model, cache, segments, replay=False, fused=True).load(cache, segments)
        assert step.fused
        fused = decode_tokens(first, step, steps, steps, eos_token_id=model.config.eos_token_id)
    assert torch.equal(fused[0], eager[0])
    assert_close(fused[1], eager[1], atol=2e-3, rtol=0)  # logits up to ~0.7: fp16 steps of summation order
