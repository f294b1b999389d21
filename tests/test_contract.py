"""The method contract: every registered method (visiondrop.methods.METHODS) on every shipped config (LLaVA-1.5
configs on the tiny 1.5 model, `llava_next_*` configs on the tiny NeXT model, `video_llava*` configs on the tiny
Video-LLaVA with two 8-frame clips) keeps five properties:

  a. counts = schedule: the measured visual tokens per layer are the method's expected counts, per sample;
  b. cached = recomputed: cached greedy decoding gives the logits of a full pruned forward over prompt + tokens;
  c. batch = one by one: a right-padded batch of two gives each sample's tokens, logits and kept origins alone;
  d. SDPA = eager attention: same tokens kept and generated, logits close;
  e. full retention = unpruned: options that keep every token give the unpruned logits.

A new method or config is covered by being registered or shipped. The method API is called only by the three
helpers right below (expected counts, holding decisions fixed, full-retention overrides).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import torch
from conftest import TEST_DEVICE, TEST_DTYPE, assert_close, encode_prompt, right_pad, stand_in_image, stand_in_picture
from fingerprints import is_next, is_video, shipped_configs, video_configs

from visiondrop.config import load_config
from visiondrop.methods import METHODS
from visiondrop.methods.replay import Replay
from visiondrop.models import Geometry

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = shipped_configs() + video_configs()
NEW_TOKENS = 3


# ---- the method API (the only calls into it) ----------------------------------------------------------------

def expected_counts(model, n_visual: int, units: int) -> list[int]:
    """The installed method's visual tokens in the input of every decoder layer, for a sample the unpruned model
    splices into `n_visual` tokens from `units` tower views (an encoder stage sees units x the tower's patches)."""
    method, tower = model.method, model.get_vision_tower()
    if method.has_encoder_stage:
        geometry = Geometry(tower.num_patches, units, len(model.model.layers))
        return method.layer_counts(geometry)
    return method.sample_counts(n_visual, units, len(model.model.layers))


def hold_decisions(model) -> None:
    """Make later forwards replay the next prefill's in-LLM decisions (methods scoring with the last token would
    otherwise re-decide over prompt + generated tokens); encoder-only methods need nothing."""
    if model.model.method is not None:
        model.model.reduce_stage = Replay(model.model.method)


# Methods whose options cannot keep every token unchanged, and why (property e does not apply to them).
NO_FULL_RETENTION = {
    "visionzip": "its dominant tokens count the CLS token, which always enters the LLM",
    "sparsevlm": "every stage prunes at least one token and re-inserts it as a recycled cluster after the kept ones",
}


def full_retention_overrides(method: str, n_visual: int) -> list[str] | None:
    """Config overrides under which `method` keeps all `n_visual` visual tokens of a sample in order, with their
    positions (None: none known). `budget=null`: no nominal average to meet."""
    keep_all = f"[{n_visual}, 0]"
    overrides = {
        "none": [],
        "visiondrop": ["encoder.enabled=false", "llm.per_sub_image=false", "llm.layers=[8, 16, 24]",
                       f"llm.tokens=[{keep_all}, {keep_all}, {keep_all}]"],
        "fastv": [f"keep={n_visual}", "prune_ratio=null"],
        "pdrop": ["ratio=1"],
        "vispruner": [f"tokens={n_visual}", "important_ratio=1"],
    }.get(method)
    return None if overrides is None else [*overrides, "budget=null"]


# ---- the tiny models and their inputs -------------------------------------------------------------------------

@dataclass
class Sample:
    """One prompt with its image, as generate() takes it alone, and its unpruned visual segment."""

    ids: torch.Tensor
    images: torch.Tensor | list[torch.Tensor]
    image_sizes: list[tuple[int, int]] | None
    n_visual: int
    units: int


@dataclass
class Family:
    """A tiny checkpoint loaded with SDPA and with eager attention, two samples and sample 0's unpruned logits."""

    tokenizer: object
    model: object
    eager: object
    samples: list[Sample]
    unpruned_logits: torch.Tensor


QUESTIONS = ("<image>\nWhat is on the table next to the red cup?", "<image>\nIs it sunny?")
NEXT_SIZES = ((640, 480), (336, 336))  # a 2x2 grid (5 tower views) and a 1x2 grid (3 views)
FRAMES = 8  # Video-LLaVA: one placeholder per frame, clips [1, 3, 8, 224, 224]


def load(path: Path, attn: str):
    from llava.model.visiondrop_llava import load_model_for_eval

    tokenizer, model, _, _ = load_model_for_eval(str(path), None, dtype=TEST_DTYPE, device=TEST_DEVICE,
                                                 attn_implementation=attn)
    return tokenizer, model


def stand_in_clip(seed: int) -> torch.Tensor:
    """A deterministic random clip [1, 3, 8, 224, 224] (a stand-in for 8 preprocessed frames)."""
    return torch.randn(1, 3, FRAMES, 224, 224, generator=torch.Generator().manual_seed(seed))


def family_inputs(tokenizer, model, family: str) -> list[tuple]:
    """(ids, images, image_sizes) of the two samples: different prompts and images; on NeXT also different grids,
    on Video-LLaVA 8 frame placeholders and a clip each."""
    from llava.mm_utils import preprocess_images

    if family == "video":
        prompts = [encode_prompt(tokenizer, q.replace("<image>", "<image>" * FRAMES)) for q in QUESTIONS]
        return [(ids, stand_in_clip(40 + i), None) for i, ids in enumerate(prompts)]
    prompts = [encode_prompt(tokenizer, q) for q in QUESTIONS]
    if family == "llava15":
        return [(ids, stand_in_image(40 + i), None) for i, ids in enumerate(prompts)]
    pictures = [stand_in_picture(*size, seed=40 + i) for i, size in enumerate(NEXT_SIZES)]
    stacks = preprocess_images(pictures, "anyres", 336, model.config.image_grid_pinpoints)
    return [(ids, [stack], [size]) for ids, stack, size in zip(prompts, stacks, NEXT_SIZES)]


def config_family(config: str) -> str:
    """Which tiny model a shipped config runs on: "next", "video" or "llava15"."""
    return "next" if is_next(config) else "video" if is_video(config) else "llava15"


@cache
def build_family(root: Path, family: str) -> Family:
    from llava.model.tiny import tiny_llava_next_path
    from llava.model.tiny_video import tiny_video_llava_path

    path = {"next": tiny_llava_next_path(root.parent), "video": tiny_video_llava_path(root.parent),
            "llava15": root}[family]
    (tokenizer, model), (_, eager) = load(path, "sdpa"), load(path, "eager")
    samples = []
    for ids, images, sizes in family_inputs(tokenizer, model, family):
        spliced = model.prepare_multimodal_batch(ids[None], images=images, image_sizes=sizes)
        samples.append(Sample(ids, images, sizes, int(spliced.visual_len[0]), int(spliced.visual_units[0])))
    first = samples[0]
    return Family(tokenizer, model, eager, samples, model(first.ids[None], images=first.images,
                                                           image_sizes=first.image_sizes))


@pytest.fixture(scope="module")
def families(tiny_path):
    """family(config) -> the Family its model runs on (each loaded once per module, on first use)."""
    yield lambda config: build_family(tiny_path, config_family(config))
    build_family.cache_clear()


def install(model, config: str, overrides=()) -> None:
    model.set_pruning(load_config(CONFIGS / config, list(overrides)))


def batch_args(samples: list[Sample]) -> dict:
    """generate() / forward() arguments of a right-padded batch of the samples."""
    ids, mask = right_pad([s.ids for s in samples])
    if isinstance(samples[0].images, torch.Tensor):
        images, sizes = torch.cat([s.images for s in samples]), None
    else:
        images, sizes = [x for s in samples for x in s.images], [x for s in samples for x in s.image_sizes]
    return dict(input_ids=ids, attention_mask=mask, images=images, image_sizes=sizes)


def alone(sample: Sample) -> dict:
    return dict(input_ids=sample.ids[None], images=sample.images, image_sizes=sample.image_sizes)


def kept_origins(model, row: int = 0) -> list[list[int]]:
    return [o[row].tolist() for o in model.last_stats.stage_origins]


def skip_near_ties(config: str) -> None:
    """SparseVLM's fp16 softmax scores have near-ties that flip between kernels (a GPU-only, fp16-only skip)."""
    if config.startswith("sparsevlm/") and TEST_DTYPE != torch.float32:
        pytest.skip("SparseVLM's fp16 softmax scores have near-ties that flip between kernels in fp16")


# ---- coverage: registered methods and shipped configs --------------------------------------------------------

def test_every_registered_method_ships_a_config():
    shipped = {load_config(CONFIGS / c).method for c in SHIPPED}
    for name in METHODS:
        assert name in shipped, (f"method {name!r} is registered but no config under configs/ uses it: ship "
                                 f"configs/{name}/<model>_<budget>.yaml so the contract tests cover it")


def test_every_registered_method_has_a_name_and_a_title():
    for name, cls in METHODS.items():
        assert cls.name == name and cls.title, f"method {name!r}: set `title`, its display name in figures and tables"


def test_every_registered_method_has_a_full_retention_setting():
    for name in METHODS:
        assert full_retention_overrides(name, 576) is not None or name in NO_FULL_RETENTION, (
            f"method {name!r} has no full-retention setting: add the overrides that keep every token to "
            "full_retention_overrides() in tests/test_contract.py (or the reason it cannot to NO_FULL_RETENTION)")


# ---- the five properties on every shipped config ---------------------------------------------------------------

@pytest.mark.parametrize("config", SHIPPED)
def test_counts_follow_the_schedule(families, config):
    family = families(config)
    model = family.model
    install(model, config)
    model(**batch_args(family.samples))
    for row, sample in enumerate(family.samples):
        assert model.last_stats.visual_per_layer[:, row].tolist() == \
            expected_counts(model, sample.n_visual, sample.units), f"sample {row}"


@pytest.mark.parametrize("config", SHIPPED)
def test_cached_generation_equals_recomputation(families, config):
    family = families(config)
    model, sample = family.model, family.samples[0]
    install(model, config)
    hold_decisions(model)
    tokens, logits = model.generate(**alone(sample), max_new_tokens=NEW_TOKENS, return_logits=True)
    kept = kept_origins(model)
    prefix = torch.cat([sample.ids, tokens[0, :-1].cpu()])
    recomputed = model(prefix[None], images=sample.images, image_sizes=sample.image_sizes)
    assert_close(recomputed[0, -tokens.shape[1]:], logits[0], atol=1e-5, rtol=0)
    assert kept_origins(model) == kept


@pytest.mark.parametrize("config", SHIPPED)
def test_batch_equals_one_at_a_time(families, config):
    skip_near_ties(config)
    family = families(config)
    model = family.model
    install(model, config)
    single = []
    for sample in family.samples:
        tokens, logits = model.generate(**alone(sample), max_new_tokens=NEW_TOKENS, return_logits=True)
        single.append((tokens[0], logits[0], kept_origins(model)))
    tokens, logits = model.generate(**batch_args(family.samples), max_new_tokens=NEW_TOKENS, return_logits=True)
    for row, (one_tokens, one_logits, one_origins) in enumerate(single):
        n = one_tokens.shape[0]
        assert torch.equal(tokens[row, :n], one_tokens)
        assert_close(logits[row, :n], one_logits, atol=1e-4, rtol=0)
        assert kept_origins(model, row) == one_origins


@pytest.mark.parametrize("config", SHIPPED)
def test_sdpa_equals_eager_attention(families, config):
    skip_near_ties(config)
    family = families(config)
    sample = family.samples[0]
    outputs = []
    for model in (family.model, family.eager):
        install(model, config)
        tokens, logits = model.generate(**alone(sample), max_new_tokens=NEW_TOKENS, return_logits=True)
        outputs.append((tokens, logits, kept_origins(model)))
    model = family.model
    assert model.config._attn_implementation == "sdpa" and family.eager.config._attn_implementation == "eager"
    assert model.get_vision_tower().vision_tower.config._attn_implementation == "sdpa"
    (tokens, logits, origins), (eager_tokens, eager_logits, eager_origins) = outputs
    assert origins == eager_origins and torch.equal(tokens, eager_tokens)
    assert_close(logits, eager_logits, atol=1e-4, rtol=0)


FULL_RETENTION_CONFIGS = [c for c in SHIPPED if load_config(CONFIGS / c).method not in NO_FULL_RETENTION]


@pytest.mark.parametrize("config", FULL_RETENTION_CONFIGS)
def test_full_retention_equals_the_unpruned_model(families, config):
    family = families(config)
    model, sample = family.model, family.samples[0]
    install(model, config, full_retention_overrides(load_config(CONFIGS / config).method, sample.n_visual))
    logits = model(**alone(sample))
    assert model.last_stats.visual_per_layer[:, 0].tolist() == [sample.n_visual] * len(model.model.layers)
    assert_close(logits, family.unpruned_logits, atol=1e-6, rtol=0)
