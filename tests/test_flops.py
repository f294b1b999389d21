"""Tests for the analytic FLOPs / KV calculator against docs/efficiency.md, 'Protocol', and torch's FlopCounterMode."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from visiondrop.flops import (
    LLMShape,
    ProjectorShape,
    average_budget,
    boundary_selection,
    decode_flops_per_token,
    flops_report,
    from_configs,
    kv_cache_bytes,
    llm_layer_macs,
    main,
    per_layer_counts,
    vision_macs,
)
from visiondrop.models import MODELS

transformers = pytest.importorskip("transformers")

LLAVA15 = MODELS["llava-v1.5-7b"]
LLM, VIT, PROJ = LLAVA15.llm, LLAVA15.vision, LLAVA15.projector


def _vd(counts):
    return list(zip((0, 8, 16, 24), counts, strict=True))


def _report(sched, crops=1, projected=None, selection=True, text=64):
    counts = per_layer_counts(sched)
    sel = boundary_selection(text, counts) if selection else ()
    rep = flops_report(LLM, VIT, PROJ, text, counts, n_crops=crops, projected_tokens=projected, selection=sel)
    return {k: v / 1e12 for k, v in rep.items()}


def _close(a, b, rel=0.01):
    return a == pytest.approx(b, rel=rel)


def test_per_layer_counts_and_budget():
    counts = per_layer_counts(_vd((96, 70, 52, 38)))
    assert counts == [96] * 8 + [70] * 8 + [52] * 8 + [38] * 8
    assert average_budget(counts) == 64
    assert boundary_selection(64, counts) == [(160, 96), (134, 70), (116, 52)]
    with pytest.raises(ValueError):
        per_layer_counts([(2, 10)])


def test_constants():
    assert LLM.linear_macs_per_token == pytest.approx(202.4e6, rel=1e-3)
    assert 2 * vision_macs(VIT) / 1e12 == pytest.approx(0.382, rel=1e-3)
    assert decode_flops_per_token(LLM, [0] * 32) / 1e9 == pytest.approx(13.2, rel=0.01)
    step = decode_flops_per_token(LLM, [1] * 32) - decode_flops_per_token(LLM, [0] * 32)
    assert step == pytest.approx(0.52e6, rel=0.01)


@pytest.mark.parametrize(
    "sched,total,parts",
    [
        ([(0, 576)], 9.08, {"projector": 0.024, "llm": 8.50, "lm_head": 0.168}),
        (_vd((288, 211, 155, 114)), 3.85, {"selection": 0.058, "lm_head": 0.047}),
        (_vd((192, 141, 103, 76)), 2.98, {"selection": 0.043}),
        (_vd((96, 70, 52, 38)), 2.11, {"llm": 1.67, "selection": 0.028, "lm_head": 0.027}),
        (_vd((48, 35, 26, 19)), 1.67, {"selection": 0.020}),
        ([(0, 64)], 2.08, {"projector": 0.0027, "selection": 0.0, "lm_head": 0.034}),
    ],
)
def test_llava15_rows(sched, total, parts):
    rep = _report(sched)
    assert _close(rep["total"], total)
    assert _close(rep["vision"], 0.382)
    for k, v in parts.items():
        assert rep[k] == pytest.approx(v, rel=0.02, abs=1e-9), k


def test_paper_figures():
    assert _close(_report([(0, 576)])["total"], 9.06, rel=0.05)
    assert _close(_report(_vd((96, 70, 52, 38)))["total"], 2.11)
    assert _close(_report([(0, 2928)], crops=5, projected=2880)["total"], 46.25)


@pytest.mark.parametrize(
    "sched,projected,total",
    [
        ([(0, 2928)], 2880, 46.26),
        ([(0, 2880)], 2880, 45.48),
        (_vd((960, 705, 515, 380)), None, 11.64),
        (_vd((480, 350, 260, 190)), None, 7.14),
        (_vd((240, 175, 130, 95)), None, 4.94),
    ],
)
def test_next_rows(sched, projected, total):
    rep = _report(sched, crops=5, projected=projected)
    assert _close(rep["total"], total)
    assert _close(rep["vision"], 1.91)


def test_next_full_components():
    rep = _report([(0, 2928)], crops=5, projected=2880)
    for k, v in {"projector": 0.121, "llm": 43.45, "lm_head": 0.784}.items():
        assert _close(rep[k], v), k


def test_kv_cache():
    mib = 2**20
    assert kv_cache_bytes(LLM, [640] * 32) == 320 * mib
    vd = [64 + c for c in per_layer_counts(_vd((96, 70, 52, 38)))]
    assert kv_cache_bytes(LLM, vd) == 64 * mib
    assert kv_cache_bytes(LLM, [2992] * 32) / 2**30 == pytest.approx(1.46, rel=0.01)
    assert kv_cache_bytes(LLM, [10] * 32, batch=3) == 3 * kv_cache_bytes(LLM, [10] * 32)


def test_cli(capsys):
    main(["--model", "llava-v1.5-7b", "--counts", "96x8,70x8,52x8,38x8", "--text-tokens", "64"])
    out = capsys.readouterr().out
    assert "| llava-v1.5-7b | 64.0 |" in out and "2.107" in out


def test_cli_names_the_new_spelling_of_an_old_model_name(capsys):
    with pytest.raises(SystemExit):
        main(["--model", "llava15-7b", "--counts", "96x8"])
    assert "now spelled 'llava-v1.5-7b'" in capsys.readouterr().err


def test_cli_counts_every_unit_of_a_multi_unit_model(capsys):
    counts = "576x32"
    main(["--model", "llava-v1.5-7b", "--counts", counts, "--selection", "none"])
    one = capsys.readouterr().out.splitlines()[-1].split(" | ")
    main(["--model", "llava-next-7b", "--counts", counts, "--selection", "none"])
    five = capsys.readouterr().out.splitlines()[-1].split(" | ")
    assert float(five[2]) == pytest.approx(5 * float(one[2]), rel=1e-3)  # the ViT runs once per sub-image


# ---------------------------------------------------------------------------------------------------
# FlopCounterMode on tiny random models (counts 2 FLOPs per MAC for mm/bmm/addmm/convolution).


def _count(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def _tiny_llama(layers=3, kv_heads=2):
    cfg = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=172, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=kv_heads, vocab_size=300, max_position_embeddings=256,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    return cfg, transformers.LlamaForCausalLM(cfg).eval()


def _tiny_clip_config():
    return transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
        image_size=28, patch_size=7, num_channels=3, attn_implementation="eager",
    )


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_llama_matches_flop_counter(kv_heads):
    cfg, model = _tiny_llama(kv_heads=kv_heads)
    llm, _, _ = from_configs(cfg, _tiny_clip_config(), "mlp2x_gelu")
    assert llm == LLMShape(3, 64, 172, 4, kv_heads, 300)
    text, visual = 5, 37
    x = torch.randn(1, text + visual, 64)
    counted = _count(lambda: model(inputs_embeds=x, use_cache=False))
    rep = flops_report(llm, VIT, PROJ, text, [visual] * 3)
    # Rotary is elementwise and softmax/norms are not matmuls: LLM (dense QK^T and AV) + lm_head is exact.
    assert counted == rep["llm"] + rep["lm_head"]


def test_pruned_layers_follow_per_layer_counts():
    cfg, model = _tiny_llama(layers=4, kv_heads=2)
    llm, _, _ = from_configs(cfg, _tiny_clip_config())
    text, visual = 6, [40, 40, 23, 11]
    h = torch.randn(1, text + visual[0], 64)

    def run():
        nonlocal h
        for i, layer in enumerate(model.model.layers):
            h = h[:, : text + visual[i]]
            pos = torch.arange(h.shape[1])[None]
            with torch.no_grad():
                pe = model.model.rotary_emb(h, pos)
            h = layer(h, attention_mask=None, position_embeddings=pe, position_ids=pos)
        model.lm_head(model.model.norm(h))

    counted = _count(run)
    rep = flops_report(llm, VIT, PROJ, text, visual)
    assert counted == rep["llm"] + rep["lm_head"]
    assert rep["llm"] == sum(2 * llm_layer_macs(llm, text + v) for v in visual)
    avg = flops_report(llm, VIT, PROJ, text, [round(average_budget(visual))] * 4)
    assert avg["llm"] != rep["llm"]  # attention term is not linear in the average


def test_clip_vision_matches_flop_counter():
    vcfg = _tiny_clip_config()
    _, vision, _ = from_configs(_tiny_llama()[0], vcfg, "mlp2x_gelu")
    assert vision.tokens == 17 and vision.patch_pixels == 147
    torch.manual_seed(0)
    model = transformers.CLIPVisionModel(vcfg).eval()
    pixels = torch.randn(2, 3, 28, 28)  # two crops
    counted = _count(lambda: model(pixel_values=pixels))
    # Patch-embedding conv counts 2 * out_elems * fan_in, i.e. 2 * 16 * 147 * 32 per crop, like a matmul.
    llm = LLM
    rep = flops_report(llm, vision, PROJ, 0, [0] * 32, n_crops=2, projected_tokens=0)
    assert counted == rep["vision"]


def test_projector_matches_flop_counter():
    proj = ProjectorShape(32, 64)
    mlp = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 64))
    feats = torch.randn(1, 13, 32)
    counted = _count(lambda: mlp(feats))
    rep = flops_report(LLM, VIT, proj, 0, [13] * 32)
    assert counted == rep["projector"] == 2 * 13 * (32 * 64 + 64 * 64)


def test_selection_matches_flop_counter():
    cfg, model = _tiny_llama(layers=1, kv_heads=2)
    llm, _, _ = from_configs(cfg, _tiny_clip_config())
    attn = model.model.layers[0].self_attn
    n_seq, queries = 30, 12
    h = torch.randn(1, n_seq, 64)

    def score():
        q = attn.q_proj(h).view(1, n_seq, 4, 16).transpose(1, 2)[:, :, -queries:]
        k = attn.k_proj(h).view(1, n_seq, 2, 16).transpose(1, 2).repeat_interleave(2, dim=1)
        return q @ k.transpose(2, 3)

    counted = _count(score)
    rep = flops_report(llm, VIT, PROJ, 0, [0], selection=[(n_seq, queries)])
    assert counted == rep["selection"]  # q and k over n_seq tokens (k at GQA width) + queries x n_seq scores
