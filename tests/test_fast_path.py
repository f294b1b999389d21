"""The default generation path (CUDA graphs: ViT, prefill segments, decode over a static KV cache) against the
eager one: the same tokens for every shipped LLaVA-1.5 and NeXT config on padded batches, re-entrant across
models and configs, nothing stale after the weights change. On a CPU the static path runs without capture."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TEST_DEVICE, assert_same_greedy_tokens, encode_prompt, right_pad, stand_in_image

from benchmarks.runner import make_inputs
from llava.model.decoding import fast_path_applies
from llava.model.random_weights import random_llava
from visiondrop.config import load_config
from visiondrop.graphs import weights_version

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
LLAVA15 = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.glob("*/llava15*.yaml"))
NEXT = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.glob("*/llava_next*.yaml"))
QUESTIONS = ["<image>\nWhat color is the large vehicle on the left side of the street?", "<image>\nIs it red?"]
STEPS = 4


def both_paths(model, ids, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(eager tokens, fast-path tokens), EOS ignored."""
    kwargs = dict(min_new_tokens=STEPS, max_new_tokens=STEPS, **kwargs)
    return model.generate(ids, cuda_graph=False, **kwargs), model.generate(ids, cuda_graph=True, **kwargs)


def padded_llava15(tok):
    ids, mask = right_pad([encode_prompt(tok, q) for q in QUESTIONS])
    return ids, dict(attention_mask=mask, images=torch.cat([stand_in_image(40), stand_in_image(41)]))


@pytest.mark.parametrize("config", LLAVA15)
def test_llava15_fast_path_equals_eager(load_tiny, config):
    tok, model = load_tiny(CONFIGS / config)
    ids, kwargs = padded_llava15(tok)
    assert not bool(kwargs["attention_mask"].all())
    kwargs.update(min_new_tokens=STEPS, max_new_tokens=STEPS)
    eager, eager_logits = model.generate(ids, cuda_graph=False, return_logits=True, **kwargs)
    assert_same_greedy_tokens(eager, eager_logits, model.generate(ids, cuda_graph=True, **kwargs))


@pytest.fixture(scope="module")
def next_model():
    return random_llava("tiny-llava-next-7b", torch.float32, "cpu")


@pytest.mark.parametrize("config", NEXT)
def test_next_fast_path_equals_eager(next_model, config):
    next_model.set_pruning(load_config(CONFIGS / config))
    inputs = make_inputs(next_model, 2, 48)
    ids = inputs.input_ids.clone()
    mask = torch.ones_like(ids)
    mask[1, -9:] = 0  # the second row is 9 tokens shorter: a padded batch
    eager, fast = both_paths(next_model, ids, attention_mask=mask, images=inputs.images,
                             image_sizes=inputs.image_sizes)
    assert torch.equal(eager, fast)


def test_two_models_alternately_equal_each_alone():
    models = [random_llava("tiny-llava-v1.5-7b", torch.float32, "cpu", seed=s) for s in (1, 2)]
    for m in models:
        m.set_pruning(load_config(CONFIGS / "visiondrop" / "llava15_64.yaml"))
    inputs = make_inputs(models[0], 1, 40)
    run = [lambda m=m: m.generate(inputs.input_ids, images=inputs.images, min_new_tokens=STEPS,
                                  max_new_tokens=STEPS, cuda_graph=True) for m in models]
    alone = [r() for r in run]
    assert not torch.equal(alone[0], alone[1])  # different weights, different answers
    for _ in range(2):
        assert [r().tolist() for r in run] == [a.tolist() for a in alone]


def test_one_model_two_configs_alternately_equal_each_alone(load_tiny):
    tok, model = load_tiny()
    ids, kwargs = padded_llava15(tok)
    configs = [load_config(CONFIGS / c) for c in ("visiondrop/llava15_64.yaml", "fastv/llava15_128.yaml")]
    alone = []
    for cfg in configs:
        model.set_pruning(cfg)
        alone.append(both_paths(model, ids, **kwargs)[0])
    for _ in range(2):
        for cfg, expected in zip(configs, alone):
            model.set_pruning(cfg)
            assert torch.equal(model.generate(ids, min_new_tokens=STEPS, max_new_tokens=STEPS, cuda_graph=True,
                                              **kwargs), expected)
    model.set_pruning(load_config(None))


def test_changed_weights_are_not_replayed_stale():
    model = random_llava("tiny-llava-v1.5-7b", torch.float32, TEST_DEVICE)
    model.set_pruning(load_config(CONFIGS / "visiondrop" / "llava15_64.yaml"))
    inputs = make_inputs(model, 1, 40)

    def run(graphs: bool) -> torch.Tensor:
        return model.generate(inputs.input_ids, images=inputs.images, min_new_tokens=STEPS, max_new_tokens=STEPS,
                              cuda_graph=graphs)

    for _ in range(3):  # captured on the second call of each shape, replayed on the third (on a GPU)
        before = run(True)
    with torch.no_grad():  # in place: a replay reads the new values
        model.lm_head.weight.copy_(torch.roll(model.lm_head.weight, 1, dims=0))
    changed = run(True)
    assert not torch.equal(changed, before) and torch.equal(changed, run(False))
    version = weights_version()
    layer = model.model.layers[3].mlp
    layer.down_proj.weight = torch.nn.Parameter(torch.randn_like(layer.down_proj.weight))  # replaced
    assert weights_version() != version
    replaced = run(True)
    assert model.decode_graphs.version == weights_version()  # the old graphs were dropped
    assert not torch.equal(replaced, changed) and torch.equal(replaced, run(False))
    version = weights_version()
    model.to(TEST_DEVICE)  # a move / cast also invalidates
    assert weights_version() != version


def test_default_path_is_eager_on_cpu_fp32_and_graphs_where_they_apply(load_tiny):
    _, model = load_tiny()
    assert fast_path_applies(model) == (TEST_DEVICE == "cuda" and model.dtype in (torch.float16, torch.bfloat16))
