"""Fair, reproducible baselines: deterministic VisPruner on planted exact ties (runs, batches, fp16 vs fp32, odd
residual counts), budget-matched and seeded SparseVLM, FastV's released keep list, the named options, and the
variant that result records and the table carry."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from conftest import encode_prompt, stand_in_image
from test_baselines import (
    CONFIGS,
    PATCH_ANGLES,
    QUESTIONS,
    N,
    angle_rows,
    clip_layer_with_known_attention,
    identity_decoder_layer,
    one_sample_batch,
    per_layer,
    reference_diverse,
    tower_input,
)

from llava.eval.scoring.results import load_results, write_result
from llava.model.language_model.llava_llama import apply_reductions
from visiondrop.config import ConfigError, load_config, validate_budget
from visiondrop.execution import Execution
from visiondrop.merging import dpc_knn_merge
from visiondrop.methods.fastv import FastV, FastVOptions
from visiondrop.methods.visionzip import VisionZip, VisionZipOptions
from visiondrop.methods.vispruner import VisPruner, VisPrunerOptions
from visiondrop.scoring import last_token_attention

REPO = Path(__file__).resolve().parents[1]


# ---- VisPruner: planted exact ties ------------------------------------------------------------------------

def planted_ties(n_patches: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A tower input whose CLS attention ties exactly (7 distinct angles, repeated) and patch features whose
    cosine similarities tie exactly (rows of four +-1 entries: unit rows of +-0.5, dot products in steps of 0.25,
    exact in fp16 and fp32 in any summation order). Returns (layer input [1, 1+P, 4], features [1, 1+P, 8])."""
    angles = [0.5 * (p % 7) for p in range(n_patches)]
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n_patches + 1):
        row = torch.zeros(8)
        row[torch.randperm(8, generator=g)[:4]] = torch.randint(0, 2, (4,), generator=g).float() * 2 - 1
        rows.append(row)
    return tower_input(angles), torch.stack(rows)[None]


def cls_attention_f64(layer_input: torch.Tensor) -> list[float]:
    """Head-mean CLS attention to every patch of one image, in float64."""
    with torch.no_grad():
        probs, _ = clip_layer_with_known_attention(torch.float64).cls_attention(layer_input.double())
    return probs.mean(dim=1)[0, 1:].tolist()


def reference_selection(layer_input: torch.Tensor, features: torch.Tensor, tokens: int) -> list[int]:
    """VisPruner by the documented rule in float64 and plain Python: importance by CLS attention with exact ties
    to the lowest patch index, then the diverse rounds with stable sorts (ties to the lowest list position)."""
    scores = cls_attention_f64(layer_input)
    order = sorted(range(len(scores)), key=lambda p: -scores[p])  # Python's sort is stable
    n_important = tokens // 2
    unit = (features[0, 1:] / 2).tolist()
    diverse = reference_diverse(unit, order[n_important:], tokens - n_important)
    return sorted(order[:n_important] + diverse)


def run_vispruner(layer_input, features, dtype=torch.float32, **options) -> torch.Tensor:
    layer = clip_layer_with_known_attention(dtype)
    method = VisPruner(VisPrunerOptions(**options))
    with torch.no_grad():
        return method.reduce_encoder(layer, layer_input.to(dtype), features.to(dtype), Execution()).origin


@pytest.mark.parametrize("n_patches", [25, 26])  # residual 20 (even) and 21 (odd: the release crashes)
def test_vispruner_ties_go_to_the_lowest_index_in_every_precision(n_patches):
    layer_input, features = planted_ties(n_patches)
    assert len(set(cls_attention_f64(layer_input))) == 7  # the ties are real: 7 distinct values over all patches
    expected = reference_selection(layer_input, features, tokens=10)
    fp32 = run_vispruner(layer_input, features, tokens=10)
    assert fp32[0].tolist() == expected
    for _ in range(3):  # repeated runs
        assert torch.equal(run_vispruner(layer_input, features, tokens=10), fp32)
    # the release's precision path (softmax and similarities in the tower's fp16) selects the same tokens
    assert torch.equal(run_vispruner(layer_input, features, torch.float16, tokens=10), fp32)
    assert torch.equal(run_vispruner(layer_input, features, torch.float16, tokens=10, precision="fp32"), fp32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_vispruner_selection_does_not_depend_on_the_batch(dtype):
    planted = planted_ties(25)
    others = [planted_ties(25, seed) for seed in (1, 2)]
    alone = run_vispruner(*planted, dtype, tokens=10)
    for position in (0, 1, 2):
        batch = others[:position] + [planted] + others[position:]
        inputs, features = (torch.cat(parts) for parts in zip(*batch))
        together = run_vispruner(inputs, features, dtype, tokens=10)
        assert torch.equal(together[position], alone[0])


def test_vispruner_options_are_checked():
    assert VisPrunerOptions().ties == "lowest_index" and VisPrunerOptions().precision == "tower"
    layer_input, features = planted_ties(25)
    assert run_vispruner(layer_input, features, tokens=10, ties="unstable").shape == (1, 10)
    for key, value in (("ties", "random"), ("precision", "fp64")):
        with pytest.raises(ConfigError, match=f"options: {key}="):
            load_config(CONFIGS / "vispruner" / "llava15_64.yaml", [f"{key}={value}"])


# ---- VisionZip: CLS softmax precision ---------------------------------------------------------------------

def test_visionzip_cls_softmax_in_the_tower_dtype_or_fp32():
    layer_input, features = tower_input(PATCH_ANGLES), torch.randn(1, 11, 6, generator=torch.Generator().manual_seed(4))
    selections = []
    for dtype, softmax in ((torch.float32, "tower"), (torch.float16, "tower"), (torch.float16, "fp32")):
        method = VisionZip(VisionZipOptions(dominant=4, contextual=2, cls_softmax=softmax))
        with torch.no_grad():
            units = method.reduce_encoder(clip_layer_with_known_attention(dtype), layer_input.to(dtype),
                                          features.to(dtype), Execution())
            out, origin = units.features, units.origin
        assert out.dtype == dtype
        selections.append(origin[0].tolist())
    assert selections[0] == selections[1] == selections[2] == [-1, 1, 3, 8, 0, 5]  # as by hand in test_baselines
    with pytest.raises(ConfigError, match="cls_softmax="):
        load_config(CONFIGS / "visionzip" / "llava_next_320.yaml", ["cls_softmax=fp16"])


# ---- SparseVLM: budget-matched lists, seeded noise, clustering precision ----------------------------------

MATCHED = {
    192: per_layer((N, 3), (282, 4), (184, 9), (102, 16)),
    128: per_layer((N, 3), (252, 4), (96, 9), (31, 16)),
    64: per_layer((N, 3), (29, 4), (12, 9), (6, 16)),
}


@pytest.fixture(scope="module")
def tiny(load_tiny):
    return load_tiny()


@pytest.mark.parametrize("budget", sorted(MATCHED))
def test_sparsevlm_matched_configs_average_exactly_their_budget(tiny, budget):
    cfg = load_config(CONFIGS / "sparsevlm" / f"llava15_{budget}_matched.yaml")
    assert not cfg.allow_budget_mismatch and cfg.derived
    assert validate_budget(cfg) == MATCHED[budget] and sum(MATCHED[budget]) == 32 * budget
    tok, model = tiny
    model.set_pruning(cfg)
    model(encode_prompt(tok, QUESTIONS[0])[None], images=stand_in_image(1))
    assert model.last_stats.visual_per_layer[:, 0].tolist() == MATCHED[budget]
    assert model.last_stats.average_visual_tokens[0] == budget


def test_sparsevlm_seeded_runs_repeat(tiny):
    tok, model = tiny
    ids, image = encode_prompt(tok, QUESTIONS[0]), stand_in_image(2)
    runs = []
    for _ in range(2):
        model.set_pruning(load_config(CONFIGS / "sparsevlm" / "llava15_64.yaml"))
        logits = model(ids[None], images=image)
        runs.append((logits, [o[0] for o in model.last_stats.stage_origins]))
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_dpc_knn_merge_repeats_with_a_seed_in_either_precision(dtype):
    tokens = torch.randn(40, 16, generator=torch.Generator().manual_seed(3))
    a = dpc_knn_merge(tokens.to(dtype), 5, torch.Generator().manual_seed(7))
    b = dpc_knn_merge(tokens.to(dtype), 5, torch.Generator().manual_seed(7))
    assert a[0].dtype == dtype and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    fp32 = dpc_knn_merge(tokens.to(dtype), 5, torch.Generator().manual_seed(7), torch.float32)
    assert fp32[0].dtype == dtype  # computed in fp32, returned in the tokens' dtype


def test_sparsevlm_cluster_precision_option():
    cfg = load_config(CONFIGS / "sparsevlm" / "llava15_64.yaml", ["cluster_precision=fp32"])
    assert cfg.options.cluster_precision == "fp32"
    with pytest.raises(ConfigError, match="cluster_precision="):
        load_config(CONFIGS / "sparsevlm" / "llava15_64.yaml", ["cluster_precision=bf16"])


# ---- FastV: the released window's keep list ---------------------------------------------------------------

def released_keep_list(attention: torch.Tensor, sys_length: int, image_length: int, rank: int) -> list[int]:
    """The release's rule (its decoder loop at layer K): keep [0, S), the top-`rank` of the last token's
    head-mean attention over [S, S + N), and [S + N, T); sorted. Its scripts use S = image start + 1."""
    top = attention[sys_length:sys_length + image_length].topk(rank).indices + sys_length
    keep = torch.cat([torch.arange(sys_length), top, torch.arange(sys_length + image_length, attention.numel())])
    return keep.sort().values.tolist()


@pytest.mark.parametrize("first_text_angle,text_wins", [(0.05, True), (2.0, False)])
def test_fastv_released_window_keeps_the_release_keep_list(first_text_angle, text_wins):
    # 2 system tokens, 6 visual tokens (sequence 2-7), text tokens 8 (the first after the image), 9 and the last
    # (10, angle 0). The release scores [3, 9): visual 1-5 and text token 8.
    visual = [1.2, 0.1, 0.9, 0.3, 1.5, 0.6]
    inputs = angle_rows([2.0, 2.5, *visual, first_text_angle, 2.9, 0.0])
    batch, rope = one_sample_batch(torch.randn(11, 8), 2, 6, layer_input=inputs)
    layer = identity_decoder_layer()
    with torch.no_grad():
        attention = last_token_attention(inputs, layer, rope[0][0], rope[1][0], slice(0, 11))
        expected = released_keep_list(attention, sys_length=3, image_length=6, rank=3)
        reductions = FastV(FastVOptions(keep=3, window_offset=1)).reduce(1, batch, layer, rope, None, Execution())
    assert (8 in expected) == text_wins
    pruned = apply_reductions(batch, reductions, compact_positions=False)  # FastV keeps original positions
    assert pruned.positions[0, :int(pruned.lengths[0])].tolist() == expected
    assert int(pruned.visual_len[0]) == (3 if text_wins else 4)  # visual 0 + the visual winners


def test_fastv_released_window_on_the_tiny_model(tiny):
    tok, model = tiny
    ids, image = encode_prompt(tok, QUESTIONS[1]), stand_in_image(6)
    model.set_pruning(load_config(raw={"method": "fastv", "budget": 64}))
    n_default = model(ids[None], images=image).shape[1]
    model.set_pruning(load_config(raw={"method": "fastv", "keep": 30, "window_offset": 1}))
    logits = model(ids[None], images=image)
    assert model.last_stats.visual_per_layer[2, 0].item() in (30, 31)  # visual 0 + the top 30 of the window
    # the first text token is dropped exactly when it lost (then visual 0 is one extra visual token), so the
    # sequence always has the default's length; keeping the text token would make it one longer
    assert logits.shape[1] == n_default
    tokens = model.generate(ids[None], images=image, max_new_tokens=3)
    assert tokens.shape == (1, 3)


# ---- the variant in result records and the table ----------------------------------------------------------

def test_result_records_and_the_table_say_which_variant_ran(tmp_path):
    spec = importlib.util.spec_from_file_location("make_table", REPO / "scripts" / "make_table.py")
    make_table = importlib.util.module_from_spec(spec)
    sys.modules["make_table"] = make_table  # its dataclasses look their module up there
    spec.loader.exec_module(make_table)
    fastv = load_config(CONFIGS / "fastv" / "llava15_64.yaml", ["decode=dynamic"]).to_dict()
    assert fastv["variant"] == "decode=dynamic, window_offset=0"
    for name, budget, mean in (("llava15_64", 64, 82.25), ("llava15_64_matched", 64, 64.0)):
        config = load_config(CONFIGS / "sparsevlm" / f"{name}.yaml").to_dict()
        write_result(tmp_path / f"{name}.json", "gqa", {"accuracy": 50.0},
                     extra={"model": "m", "method": "sparsevlm", "budget": budget, "config": config,
                            "visual_tokens_mean": mean})
    write_result(tmp_path / "fastv.json", "gqa", {"accuracy": 51.0},
                 extra={"model": "m", "method": "fastv", "budget": 64, "config": fastv})
    rows = [line for line in make_table.build_table(load_results(tmp_path)).splitlines() if "| 64 |" in line]
    assert rows == [
        "| fastv | 64 | – | decode=dynamic, window_offset=0 | 51.00 | – | – | – | – | – | – | – | – "
        "| – |",
        "| sparsevlm | 64 | 82.2 | published lists [66, 30, 17], seed=0, cluster_precision=model | 50.00 | – | – "
        "| – | – | – | – | – | – | – |",
        "| sparsevlm | 64 | 64.0 | re-solved lists [11, 11, 5], seed=0, cluster_precision=model | 50.00 | – | – "
        "| – | – | – | – | – | – | – |",
    ]
