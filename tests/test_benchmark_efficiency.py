"""CPU smoke test of scripts/benchmark_efficiency.py on the tiny random model, plus its building blocks.

fp32 on purpose: fp16 matmuls on a CPU are emulated and would take minutes; the GPU run uses fp16. One
intra-op thread: on a loaded 2-core machine OpenMP threads spin against each other (seconds become minutes).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from benchmarks.runner import find_max_batch, generate_timed, make_inputs
from llava.model.random_weights import random_llava
from visiondrop.config import load_config
from visiondrop.flops import (
    LLMShape,
    ProjectorShape,
    VisionShape,
    boundary_selection,
    flops_report,
    kv_cache_bytes,
)
from visiondrop.timing import SectionTimer

REPO = Path(__file__).resolve().parents[1]
VD64 = REPO / "configs" / "visiondrop" / "llava15_64.yaml"
# The tiny shapes, written out independently of the model code (llava/model/tiny.py, vocab 32000).
TINY_LLM = LLMShape(layers=32, hidden=64, ffn=172, heads=4, kv_heads=4, vocab=32000)
TINY_VIT = VisionShape(layers=24, width=32, ffn=64, tokens=577)
TINY_PROJ = ProjectorShape(in_width=32, out_width=64, n_linears=2)
TEXT = 64


def _script():
    spec = importlib.util.spec_from_file_location("benchmark_efficiency", REPO / "scripts" / "benchmark_efficiency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module



@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("efficiency")
    record = run_benchmark(out, "--random-weights", "tiny-llava-v1.5-7b", "--configs", str(VD64),
                           "--batch-sizes", "1,2", "--repeats", "2", "--warmup", "1")
    return record, (out / "efficiency.md").read_text()


def run_benchmark(out: Path, *args: str) -> dict:
    """The script on the CPU in fp32 with G = 1, 2 and TEXT text tokens, plus `args`; returns its JSON record."""
    _script().main([*args, "--dtype", "fp32", "--device", "cpu", "--gen-tokens", "1,2", "--text-tokens", str(TEXT),
                    "--out", str(out)])
    return json.loads((out / "efficiency.json").read_text())


def test_old_random_weights_spelling_names_the_new_one(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_benchmark(tmp_path, "--random-weights", "tiny")
    assert "now spelled 'tiny-llava-v1.5-7b'" in capsys.readouterr().err


def _results(record: dict) -> dict[tuple[str, str], dict]:
    return {(r["config"], r["batch_label"]): r for r in record["results"]}


def test_outputs_cover_every_config_and_batch(outputs):
    record, md = outputs
    cells = _results(record)
    assert set(cells) == {(c, b) for c in ("none/llava15", "visiondrop/llava15_64", "transformers")
                          for b in ("1", "2")}
    assert all(r["status"] == "ok" for r in cells.values())
    assert record["environment"]["torch"] == torch.__version__ and record["environment"]["mode"] == "eager"
    for label in ("| none |", "| visiondrop 64 |", "| transformers generate |", "## Batch 1", "## Batch 2",
                  "### end to end, G=4", "vs transformers G=1 / G=2", "% of limit: decode HBM / TTFT FLOP/s"):
        assert label in md
    for r in (r for (c, _), r in cells.items() if c != "transformers"):
        lat = r["latency_ms"]
        assert set(lat["e2e"]) == {"1", "2", "4"} and lat["decode_per_token"]["n"] == 2
        assert lat["ttft"]["median"] == pytest.approx(lat["e2e"]["1"]["median"])
        assert r["throughput"]["G4"] == pytest.approx(r["batch"] * 1e3 / lat["e2e"]["4"]["median"])
        assert r["ratio_to_unpruned"]["speedup_ttft"] > 0
    vd = cells[("visiondrop/llava15_64", "1")]["latency_ms"]
    assert vd["select"]["median"] > 0 and cells[("none/llava15", "1")]["latency_ms"]["select"]["median"] == 0


def test_transformers_row_and_physical_limits(outputs):
    """The reference row: transformers' own class on the same weights, the same tokens; ratios and limits."""
    record, _ = outputs
    cells = _results(record)
    weights = record["settings"]["llm_weight_bytes"]
    assert weights == 4 * (32 * (4 * 64 * 64 + 3 * 64 * 172 + 2 * 64) + 64 + 32000 * 64)  # tiny LLM, fp32
    for batch in ("1", "2"):
        hf, none = cells[("transformers", batch)], cells[("none/llava15", batch)]
        assert hf["visual_per_layer"] == [576] * 32 and hf["flops_per_sample"] == none["flops_per_sample"]
        assert hf["ratio_to_transformers"]["speedup_e2e_G4"] == 1.0
        for r in (hf, none):
            lat, limit = r["latency_ms"], r["physical"]
            expected = (weights + r["kv_analytic_bytes"]) / (lat["decode_per_token"]["median"] * 1e-3) / 1e12
            assert limit["decode_hbm_tbs"] == pytest.approx(expected)
            assert limit["decode_hbm_pct"] == pytest.approx(100 * expected / 4.8)
            tflops = r["flops_per_sample_lm_head_last"] * int(batch) / (lat["ttft"]["median"] * 1e-3) / 1e12
            assert limit["ttft_tflops_pct"] == pytest.approx(100 * tflops / 989)
        speedup = hf["latency_ms"]["e2e"]["4"]["median"] / none["latency_ms"]["e2e"]["4"]["median"]
        assert none["ratio_to_transformers"]["speedup_e2e_G4"] == pytest.approx(speedup)


def test_reference_model_gives_our_tokens():
    """transformers' LlavaForConditionalGeneration / LlavaNextForConditionalGeneration over our tensors generate
    the unpruned model's greedy tokens (NeXT in the spatial_unpad layout both implement)."""
    from benchmarks.reference import reference_generate, reference_inputs, reference_model

    for shape, merge in (("tiny-llava-v1.5-7b", None), ("tiny-llava-next-7b", "spatial_unpad")):
        model = random_llava(shape, torch.float32, "cpu", merge_type=merge)
        model.set_pruning(load_config(None))
        inputs = make_inputs(model, 2, TEXT)
        hf = reference_model(model)
        assert hf.lm_head.weight.data_ptr() == model.lm_head.weight.data_ptr()  # shared, not copied
        batch = reference_inputs(hf, inputs.input_ids, inputs.images, inputs.image_sizes)
        assert batch["input_ids"].shape[1] == TEXT + (576 if merge is None else 2928)
        ours = model.generate(inputs.input_ids, images=inputs.images, image_sizes=inputs.image_sizes,
                              min_new_tokens=4, max_new_tokens=4)
        assert torch.equal(reference_generate(hf, batch, 4), ours)


def test_unpruned_flops_equal_the_calculator(outputs):
    record, _ = outputs
    expected = flops_report(TINY_LLM, TINY_VIT, TINY_PROJ, TEXT, [576] * 32)
    for batch in ("1", "2"):
        got = _results(record)[("none/llava15", batch)]["flops_per_sample"]
        assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("config", ["none/llava15", "visiondrop/llava15_64"])
def test_allocated_kv_equals_analytic(outputs, config):
    record, _ = outputs
    expected_counts = [576] * 32 if config == "none/llava15" else [96] * 8 + [70] * 8 + [52] * 8 + [38] * 8
    for batch in (1, 2):
        r = _results(record)[(config, str(batch))]
        assert r["visual_per_layer"] == expected_counts and r["uniform_across_batch"]
        analytic = kv_cache_bytes(TINY_LLM, [TEXT + n for n in r["visual_per_layer"]], batch, bytes_per_elem=4)
        assert r["kv_allocated_bytes"] == analytic == r["kv_analytic_bytes"]


def test_timed_loop_equals_generate_and_times_the_selection():
    model = random_llava("tiny-llava-v1.5-7b", torch.float32, "cpu")
    ids = model.get_vision_tower().vision_tower.embeddings.position_ids
    assert torch.equal(ids, torch.arange(577)[None])  # rebuilt after to_empty (builder fix)
    model.set_pruning(load_config(VD64))
    inputs = make_inputs(model, 2, TEXT)
    reference = model.generate(inputs.input_ids, images=inputs.images, min_new_tokens=3, max_new_tokens=3)
    timer = SectionTimer("cpu")
    model.attach_timer(timer)
    tokens = generate_timed(model, inputs, 3, timer)
    assert torch.equal(tokens, reference)
    sections = timer.sections_ms()
    assert set(sections) == {"vit", "select_encoder", "select_llm"}
    assert len(timer.marks_ms()[0]) == 3
    model.attach_timer(None)
    assert model.model.reduce_stage is None and model.get_vision_tower().timer is None


def test_graph_decode_mode_runs_and_says_so(tmp_path):
    record = run_benchmark(tmp_path, "--random-weights", "tiny-llava-v1.5-7b", "--configs", str(VD64),
                           "--batch-sizes", "2", "--repeats", "1", "--warmup", "1", "--cuda-graph-decode",
                           "--no-transformers")
    assert record["environment"]["mode"].startswith("CUDA graphs")
    assert "Mode: CUDA graphs (ViT, prefill segments, decode" in (tmp_path / "efficiency.md").read_text()
    for r in record["results"]:
        assert r["status"] == "ok" and r["latency_ms"]["decode_per_token"]["n"] == 1
        # static buffers: the prompt's keys / values plus room for 3 new tokens, rounded up to 64-token buckets
        assert r["kv_allocated_bytes"] > r["kv_analytic_bytes"]


def test_timed_graph_decode_equals_generate():
    model = random_llava("tiny-llava-v1.5-7b", torch.float32, "cpu")
    model.set_pruning(load_config(VD64))
    inputs = make_inputs(model, 2, TEXT)
    reference = model.generate(inputs.input_ids, images=inputs.images, min_new_tokens=4, max_new_tokens=4)
    assert torch.equal(generate_timed(model, inputs, 4, SectionTimer("cpu"), cuda_graph=True), reference)


@pytest.mark.parametrize("limit,cap,known,expected", [(100, 256, 16, 96), (1000, 256, 16, 256), (0, 64, 0, 0),
                                                      (5, 64, 0, 4), (40, 32, 16, 32)])
def test_find_max_batch(limit, cap, known, expected):
    tried = []

    def fits(b: int) -> bool:
        tried.append(b)
        return b <= limit

    assert find_max_batch(fits, known, cap, step=8) == expected
    assert max(tried, default=0) <= cap


def test_graph_stage_forward_shapes_and_report(outputs):
    from benchmarks.graphs import layer_segments, stage_forward
    from benchmarks.report import markdown

    counts = [96] * 8 + [70] * 8 + [52] * 8 + [38] * 8
    assert layer_segments(counts) == [(0, 8, 96), (8, 16, 70), (16, 24, 52), (24, 32, 38)]
    model = random_llava("tiny-llava-v1.5-7b", torch.float32, "cpu")
    outs = stage_forward(model, counts, TEXT)()
    assert [tuple(o.shape) for o in outs] == [(1, TEXT + n, 64) for n in (96, 70, 52, 38)]
    record, _ = outputs
    timing = {"median": 2.0, "p10": 1.9, "p90": 2.1, "n": 2}
    record = {**record, "cuda_graph_prefill": [
        {"config": "none/llava15", "label": "none", "eager_layers_ms": timing, "graph_layers_ms": timing,
         "graph_speedup": 1.0},
        {"config": "visiondrop/llava15_64", "label": "visiondrop 64", "error": "RuntimeError: capture failed"}]}
    md = markdown(record)
    assert "CUDA graph" in md and "| none | 2.0 [1.9–2.1] | 2.0 [1.9–2.1] | 1.00× | 1.00× |" in md
    assert "capture failed" in md


# ---- LLaVA-NeXT (tiny-llava-next-7b: one 672x672 image = 5 sub-images; flat merge = 5 x 576 = 2880 tokens) -----

VD_NEXT = REPO / "configs" / "visiondrop" / "llava_next_320.yaml"
NEXT_COUNTS = {"none/llava_next": [2880] * 32,
               "visiondrop/llava_next_320": [480] * 8 + [350] * 8 + [260] * 8 + [190] * 8}
NEXT_PROJECTED = {"none/llava_next": 2880, "visiondrop/llava_next_320": 5 * (84 + 12)}


@pytest.fixture(scope="module")
def next_outputs(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("efficiency_next")
    record = run_benchmark(out, "--random-weights", "tiny-llava-next-7b", "--configs", str(VD_NEXT),
                           "--batch-sizes", "1,2", "--repeats", "1", "--warmup", "0")
    assert (out / "efficiency.md").is_file()
    return record, (out / "efficiency.md").read_text()


def test_next_report_uses_the_next_reference(next_outputs):
    record, md = next_outputs
    cells = _results(record)
    assert record["reference"] == "none/llava_next" and record["settings"]["merge_type"] == "flat"
    assert set(cells) == {(c, b) for c in [*NEXT_COUNTS, "transformers"] for b in ("1", "2")}
    assert all(r["status"] == "ok" and r["ratio_to_unpruned"]["flops"] > 0 for r in cells.values())
    assert cells[("transformers", "1")]["visual_per_layer"] == [2928] * 32  # its own spatial_unpad layout
    assert cells[("none/llava_next", "2")]["ratio_to_unpruned"]["flops"] == 1.0
    for label in ("| none | 2880.0 |", "| visiondrop 320 | 320.0 |", "5 sub-images", "## Batch 2"):
        assert label in md


@pytest.mark.parametrize("config", list(NEXT_COUNTS))
def test_next_kv_and_flops_follow_the_measured_counts(next_outputs, config):
    record, _ = next_outputs
    for batch in (1, 2):
        r = _results(record)[(config, str(batch))]
        assert r["visual_per_layer"] == NEXT_COUNTS[config] and r["uniform_across_batch"]
        assert r["n_crops"] == 5 and r["projected_tokens"] == NEXT_PROJECTED[config]
        analytic = kv_cache_bytes(TINY_LLM, [TEXT + n for n in r["visual_per_layer"]], batch, bytes_per_elem=4)
        assert r["kv_allocated_bytes"] == analytic == r["kv_analytic_bytes"]
        flops = r["flops_per_sample"]
        assert flops["vision"] == pytest.approx(5 * flops_report(TINY_LLM, TINY_VIT, TINY_PROJ, TEXT, [576] * 32)[
            "vision"], rel=1e-12)
        assert flops["projector"] == 2.0 * NEXT_PROJECTED[config] * TINY_PROJ.macs_per_token


def test_next_spatial_unpad_counts_2928_and_configs_must_match_the_model():
    from benchmarks.runner import make_inputs as inputs_for

    model = random_llava("tiny-llava-next-7b", torch.float32, "cpu", merge_type="spatial_unpad")
    model.set_pruning(load_config(None))
    inputs = inputs_for(model, 1, TEXT)
    assert inputs.n_crops == 5 and inputs.image_sizes == [(672, 672)]
    with torch.no_grad():
        batch = model.prepare_multimodal_batch(inputs.input_ids, None, inputs.images, inputs.image_sizes)
    assert batch.visual_len.tolist() == [2928] and hasattr(model.model, "image_newline")
    with pytest.raises(ValueError, match="targets llava-v1.5-7b"):
        _script().load_configs([str(VD64)], "llava-next-7b")


# ---- Video-LLaVA (tiny-video-llava-7b: one clip of 8 frames x 257 tokens, temporal attention in the tower) -------

VIDEO_COUNTS = {"none/video_llava": [2056] * 32,
                "visiondrop/video_llava_256": [768] * 8 + [112] * 8 + [83] * 8 + [61] * 8,
                "fastv/video_llava_256": [2056] * 2 + [136] * 30,
                "visionzip/video_llava_256": [256] * 32}
VIDEO_PROJECTED = {"none/video_llava": 2056, "visiondrop/video_llava_256": 768, "fastv/video_llava_256": 2056,
                   "visionzip/video_llava_256": 256}
TINY_VIDEO_VIT = VisionShape(layers=24, width=32, ffn=64, tokens=257)  # spatial part; temporal written out below


@pytest.fixture(scope="module")
def video_outputs(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("efficiency_video")
    configs = [str(REPO / "configs" / f"{c}.yaml") for c in list(VIDEO_COUNTS)[1:]]
    record = run_benchmark(out, "--random-weights", "tiny-video-llava-7b", "--configs", *configs,
                           "--batch-sizes", "1", "--repeats", "1", "--warmup", "0")
    return record, (out / "efficiency.md").read_text()


def test_video_cells_follow_the_measured_counts(video_outputs):
    record, md = video_outputs
    cells = _results(record)
    assert record["reference"] == "none/video_llava"
    assert set(cells) == {(c, "1") for c in [*VIDEO_COUNTS, "transformers"]}
    assert all(r["status"] == "ok" for r in cells.values())
    assert "one clip of 8 224x224 frames, video tower: LanguageBind (temporal attention)" in md
    for config, counts in VIDEO_COUNTS.items():
        r = cells[(config, "1")]
        assert r["visual_per_layer"] == counts and r["average_visual_tokens"] == (2056 if config == "none/video_llava"
                                                                                  else 256)
        assert r["n_crops"] == 8 and r["projected_tokens"] == VIDEO_PROJECTED[config]
        analytic = kv_cache_bytes(TINY_LLM, [TEXT + n for n in counts], 1, bytes_per_elem=4)
        assert r["kv_allocated_bytes"] == analytic == r["kv_analytic_bytes"]
    assert cells[("transformers", "1")]["visual_per_layer"] == [2056] * 32


def test_video_tower_flops_count_the_temporal_attention(video_outputs):
    """8 frames through the tower; each of its 24 layers adds, per frame, q/k/v/o over 257 tokens and attention
    across the 8 frames. transformers' Video-LLaVA (no temporal modules) is counted without it."""
    record, _ = video_outputs
    cells = _results(record)
    spatial = flops_report(TINY_LLM, TINY_VIDEO_VIT, TINY_PROJ, TEXT, [2056] * 32, n_crops=8)["vision"]
    temporal = 2.0 * 8 * 24 * (4 * 257 * 32 * 32 + 2 * 257 * 8 * 32)
    for config in VIDEO_COUNTS:
        assert cells[(config, "1")]["flops_per_sample"]["vision"] == pytest.approx(spatial + temporal, rel=1e-12)
    assert cells[("transformers", "1")]["flops_per_sample"]["vision"] == pytest.approx(spatial, rel=1e-12)


def test_video_reference_model_equals_ours_with_temporal_zeroed():
    """transformers' VideoLlavaForConditionalGeneration over our tensors (shared) gives our unpruned logits once
    our temporal modules are zeroed (the only case it can represent)."""
    from benchmarks.reference import reference_inputs, reference_model

    model = random_llava("tiny-video-llava-7b", torch.float32, "cpu")
    model.set_pruning(load_config(REPO / "configs" / "none" / "video_llava.yaml"))
    inputs = make_inputs(model, 1, TEXT)
    assert inputs.images.shape == (1, 3, 8, 224, 224) and inputs.n_crops == 8
    hf = reference_model(model)
    tower = model.video_tower.vision_tower
    assert hf.model.video_tower.embeddings.patch_embedding.weight.data_ptr() == \
        tower.embeddings.patch_embedding.weight.data_ptr()
    batch = reference_inputs(hf, inputs.input_ids, inputs.images)
    assert batch["input_ids"].shape[1] == TEXT + 8 * 257
    with torch.no_grad():
        for step in model.video_tower.temporal_steps:
            step.temporal_embedding.zero_()
            step.temporal_attn.out_proj.weight.zero_()
            step.temporal_attn.out_proj.bias.zero_()
        theirs = hf(**batch).logits
    ours = model(inputs.input_ids, images=inputs.images)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


# ---- Qwen2.5-VL (tiny-qwen2.5-vl-7b: one 1344x1008 image = 96 x 72 patches, 1728 merged tokens, chat prompt) ----

QWEN_COUNTS = {"none/qwen2_5_vl": [1728] * 28,
               "visiondrop/qwen2_5_vl_11": [288] * 7 + [210] * 7 + [156] * 7 + [114] * 7}
# The tiny widths (llava/model/tiny_qwen.py), written out: Qwen2 LLM with GQA and the real vocabulary; the vision
# transformer (SwiGLU, 8x8-patch windows but in blocks 7/15/23/31) and the PatchMerger 4x32 -> 128 -> 64.
TINY_QWEN_LLM = LLMShape(layers=28, hidden=64, ffn=128, heads=4, kv_heads=2, vocab=152064)
TINY_QWEN_VIT = VisionShape(layers=32, width=32, ffn=64, tokens=6912, patch_pixels=2 * 14 * 14 * 3, cls=False,
                            gated_mlp=True, window=64, full_layers=4)
TINY_QWEN_MERGER = ProjectorShape(in_width=128, out_width=64, mid_width=128)


@pytest.fixture(scope="module")
def qwen_outputs(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("efficiency_qwen")
    with pytest.MonkeyPatch.context() as patch:  # the random checkpoint is written under the cache
        patch.setenv("VISIONDROP_CACHE", str(tmp_path_factory.mktemp("qwen_cache")))
        record = run_benchmark(out, "--random-weights", "tiny-qwen2.5-vl-7b", "--configs",
                               str(REPO / "configs" / "visiondrop" / "qwen2_5_vl_11.yaml"),
                               "--batch-sizes", "1", "--repeats", "1", "--warmup", "0")
    return record, (out / "efficiency.md").read_text()


def test_qwen_cells_reference_row_and_columns(qwen_outputs):
    record, md = qwen_outputs
    cells = _results(record)
    assert record["reference"] == "none/qwen2_5_vl" and record["environment"]["mode"] == "eager"
    assert set(cells) == {(c, "1") for c in [*QWEN_COUNTS, "transformers"]}
    assert all(r["status"] == "ok" for r in cells.values())
    assert "one 1344x1008 image: 96x72 patches of 14 px (1 temporal), 1728 merged tokens" in md
    for label in ("| none | 1728.0 |", "| visiondrop 11.1% | 192.0 |", "| transformers generate | 1728.0 |",
                  "vs transformers G=1 / G=2", "% of limit: decode HBM / TTFT FLOP/s"):
        assert label in md
    for config, counts in QWEN_COUNTS.items():
        r = cells[(config, "1")]
        assert r["visual_per_layer"] == counts and r["projected_tokens"] == 1728 and r["n_crops"] == 1
        analytic = kv_cache_bytes(TINY_QWEN_LLM, [TEXT + n for n in counts], 1, bytes_per_elem=4)
        assert r["kv_allocated_bytes"] == analytic == r["kv_analytic_bytes"]
        selection = [] if config == "none/qwen2_5_vl" else boundary_selection(TEXT, counts, "visual")
        assert r["flops_per_sample"] == pytest.approx(flops_report(
            TINY_QWEN_LLM, TINY_QWEN_VIT, TINY_QWEN_MERGER, TEXT, counts, projected_tokens=1728, selection=selection),
            rel=1e-12)
    hf = cells[("transformers", "1")]
    assert hf["visual_per_layer"] == [1728] * 28
    assert hf["flops_per_sample"] == cells[("none/qwen2_5_vl", "1")]["flops_per_sample"]
    assert hf["ratio_to_transformers"]["speedup_e2e_G4"] == 1.0 and hf["physical"]["decode_hbm_pct"] > 0
    weights = record["settings"]["llm_weight_bytes"]
    layer = 2 * 64 * 64 + 2 * 64 * 32 + 64 + 2 * 32 + 3 * 64 * 128 + 2 * 64  # q/o, k/v (GQA), biases, MLP, norms
    assert weights == 4 * (28 * layer + 64 + 152064 * 64)


def test_qwen_reference_model_gives_our_tokens(tmp_path, monkeypatch):
    """transformers' Qwen2_5_VLForConditionalGeneration over our modules generates the unpruned model's greedy tokens
    on the benchmark's inputs (chat prompt of TEXT text tokens, one 1344x1008 image, batch 2)."""
    from benchmarks.reference import reference_generate, reference_inputs, reference_model
    from llava.model.builder import load_pretrained_model
    from llava.model.random_weights import random_qwen_path

    monkeypatch.setenv("VISIONDROP_CACHE", str(tmp_path))
    tokenizer, model, image_processor, _ = load_pretrained_model(
        str(random_qwen_path("tiny-qwen2.5-vl-7b", "cpu")), dtype=torch.float32)
    inputs = make_inputs(model, 2, TEXT, processors=(tokenizer, image_processor))
    assert inputs.input_ids.shape == (2, TEXT + 1728) and inputs.n_crops == 1
    hf = reference_model(model)
    assert hf.model.visual is model.model.visual and hf.lm_head is model.lm_head  # shared, not copied
    ours = model.generate(inputs.input_ids, images=inputs.images, min_new_tokens=3, max_new_tokens=3)
    assert torch.equal(reference_generate(hf, reference_inputs(hf, inputs.input_ids, inputs.images), 3), ours)
