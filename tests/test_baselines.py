"""The five baselines of the paper (FastV, PDrop, VisionZip, VisPruner, SparseVLM v1.5): selections by hand on
synthetic layers, accounting of every shipped config by hand, and FastV's dynamic decode on the tiny model
(the invariants every method keeps on every config are tests/test_contract.py's)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, encode_prompt, stand_in_image
from transformers import CLIPVisionConfig, LlamaConfig
from transformers.models.clip.modeling_clip import CLIPEncoderLayer
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from llava.model.language_model.llava_llama import LlamaLayerView
from llava.model.multimodal_encoder.clip_encoder import CLIPLayerView
from llava.model.sequence import SequenceBatch
from visiondrop.config import ConfigError, load_config, validate_budget
from visiondrop.execution import Execution
from visiondrop.merging import dpc_knn_merge
from visiondrop.methods.fastv import FastV, FastVOptions
from visiondrop.methods.pdrop import PDrop, PDropOptions
from visiondrop.methods.sparsevlm import SparseVLM, SparseVLMOptions, text_raters
from visiondrop.methods.visionzip import VisionZip, VisionZipOptions
from visiondrop.methods.vispruner import VisPruner, VisPrunerOptions, diverse_subset_batched
from visiondrop.models import MODELS
from visiondrop.scoring import last_token_attention

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
N = 576
LLAVA15 = MODELS["llava-v1.5-7b"].geometry


def diverse_subset(tokens: torch.Tensor, residual: torch.Tensor, n_keep: int, step: int = 8) -> torch.Tensor:
    """Reference (one image, a plain loop) for VisPruner's diverse tokens: reduce the index list `residual`
    (into tokens [T, C]) to `n_keep` entries.

    Each round splits the list into a = even and b = odd list positions, takes each a-token's highest cosine
    similarity to any b-token, drops the r = min(step, len - n_keep) most similar a-tokens and continues with
    [remaining a, descending similarity] + [all b]. Returns the surviving indices in list order.
    """
    if n_keep <= 0:
        return residual[:0]
    unit = F.normalize(tokens.float(), dim=-1)
    rest = residual
    while rest.numel() > n_keep:
        r = min(step, rest.numel() - n_keep)
        a, b = rest[0::2], rest[1::2]
        similarity = (unit[a] @ unit[b].T).max(dim=1).values
        order = torch.sort(similarity, descending=True, stable=True).indices
        rest = torch.cat([a[order[r:]], b])
    return rest


def per_layer(*groups: tuple[int, int]) -> list[int]:
    """[(count, n_layers), ...] -> per-layer visual counts."""
    return [count for count, n in groups for _ in range(n)]


# Per-layer visual counts of every shipped config, as docs/methods.md and docs/baselines.md give them.
EXPECTED = {
    ("fastv", 192): per_layer((N, 2), (166, 30)),
    ("fastv", 128): per_layer((N, 2), (98, 30)),
    ("fastv", 64): per_layer((N, 2), (30, 30)),
    ("pdrop", 192): per_layer((N, 2), (322, 6), (180, 8), (101, 16)),
    ("pdrop", 128): per_layer((N, 2), (241, 6), (101, 8), (42, 16)),
    ("pdrop", 64): per_layer((N, 2), (110, 6), (21, 8), (4, 16)),
    ("sparsevlm", 192): per_layer((N, 3), (309, 4), (204, 9), (113, 16)),
    ("sparsevlm", 128): per_layer((N, 3), (312, 4), (117, 9), (39, 16)),
    ("sparsevlm", 64): per_layer((N, 3), (82, 4), (32, 9), (18, 16)),
    **{(m, b): per_layer((b, 32)) for m in ("visionzip", "vispruner") for b in (192, 128, 64, 32)},
}
# SparseVLM's published lists under the strict rule (3N + 4 s1 + 9 s2 + 16 s3) / 32 (docs/methods.md, 'SparseVLM v1.5').
SPARSEVLM_STRICT = {192: 206.5, 128: 145.40625, 64: 82.25}
QUESTIONS = ("<image>\nWhat is on the table next to the red cup?", "<image>\nIs it sunny?")


@pytest.fixture(scope="module")
def tiny(load_tiny):
    return load_tiny()


# ---- configs and accounting -------------------------------------------------------------------------------

@pytest.mark.parametrize("method,budget", sorted(EXPECTED))
def test_shipped_configs_meet_the_budget(method, budget):
    """The schedules by hand; that the model measures these counts is tests/test_contract.py's property a."""
    cfg = load_config(CONFIGS / method / f"llava15_{budget}.yaml")
    counts = validate_budget(cfg)
    assert counts == EXPECTED[method, budget]
    average = sum(counts) / len(counts)
    if method == "sparsevlm":
        assert cfg.allow_budget_mismatch and average == SPARSEVLM_STRICT[budget]
    else:
        assert abs(average - budget) <= max(1.0, 0.01 * budget)


@pytest.mark.parametrize("method,minimum", [("fastv", "2\\*576/32 = 36.0"), ("pdrop", "2\\*576/32 = 36.0"),
                                            ("sparsevlm", "3\\*576/32 = 54.0")])
def test_infeasible_budget_explains_the_minimum(method, minimum):
    with pytest.raises(ConfigError, match=f"budget: 32 is infeasible for {method}.* at least {minimum}"):
        load_config(CONFIGS / method / "llava15_64.yaml", ["budget=32"])


def test_fastv_keep_derived_from_the_budget():
    for budget, keep in ((192, 166), (128, 98), (64, 30)):  # k = round((32 B - 2 N) / 30), docs/methods.md, 'FastV'
        assert load_config(raw={"method": "fastv", "budget": budget}).options.keep == keep
    with pytest.raises(ConfigError, match="at least 2\\*576/32 = 36.0"):
        load_config(raw={"method": "fastv", "budget": 32})
    with pytest.raises(ConfigError, match="expected 'static'"):
        load_config(raw={"method": "fastv", "budget": 64, "decode": "cached"})


def test_sparsevlm_recycling_counts():
    # 576 -> keep 300, 276 pruned, 82 + 1 = 83 recycled into 8 + 1 = 9 clusters -> 309
    # (docs/methods.md, 'SparseVLM v1.5')
    method = SparseVLM(SparseVLMOptions(tokens=[300, 200, 110]))
    assert method.boundaries == (3, 7, 16) and method.stage_counts(N) == [309, 204, 113]
    assert SparseVLM(SparseVLMOptions(tokens=[600, 5, 5])).stage_counts(10) == [10, 6, 6]  # k = min(list, n-1)


# ---- selections by hand on synthetic layers ---------------------------------------------------------------

def angle_rows(angles: list[float], width: int = 8) -> torch.Tensor:
    """Rows r * (cos a, sin a, 0, ...): after RMSNorm, sqrt(width) * (cos a, sin a, 0, ...)."""
    a = torch.tensor(angles)
    rows = torch.zeros(len(angles), width)
    rows[:, 0], rows[:, 1] = 3 * a.cos(), 3 * a.sin()
    return rows


def identity_decoder_layer(width: int = 8) -> LlamaLayerView:
    """One-head decoder layer (as methods see it) with q = k = RMSNorm(x), so attention logits are
    width * cos(angle difference)."""
    config = LlamaConfig(hidden_size=width, intermediate_size=width, num_attention_heads=1, num_key_value_heads=1,
                         head_dim=width)
    layer = LlamaDecoderLayer(config, 0)
    with torch.no_grad():
        layer.self_attn.q_proj.weight.copy_(torch.eye(width))
        layer.self_attn.k_proj.weight.copy_(torch.eye(width))
    return LlamaLayerView(layer)


def one_sample_batch(hidden: torch.Tensor, start: int, n_vis: int, layer_input=None) -> tuple:
    t = hidden.shape[0]
    batch = SequenceBatch(hidden=hidden[None], key_mask=torch.ones(1, t, dtype=torch.bool),
                          positions=torch.arange(t)[None], visual_start=torch.tensor([start]),
                          visual_len=torch.tensor([n_vis]), origin=[torch.arange(n_vis)],
                          layer_input=None if layer_input is None else layer_input[None])
    no_rotation = (torch.ones(1, t, hidden.shape[1]), torch.zeros(1, t, hidden.shape[1]))
    return batch, no_rotation


def test_fastv_keeps_the_top_tokens_of_the_last_token_attention():
    # 2 system tokens, 6 visual tokens, 2 text tokens; the last token points at angle 0.
    visual = [1.2, 0.1, 0.9, 0.3, 1.5, 0.6]
    inputs = angle_rows([2.0, 2.5, *visual, 0.05, 0.0])
    batch, rope = one_sample_batch(torch.randn(10, 8), 2, 6, layer_input=inputs)  # hidden: not used to score
    layer = identity_decoder_layer()
    # by hand: logits of the last query = 8 cos(a_j) / sqrt(8); softmax over all 10 tokens (all precede it)
    logits = [math.sqrt(8) * math.cos(a) for a in [2.0, 2.5, *visual, 0.05, 0.0]]
    probs = [math.exp(x) / sum(math.exp(y) for y in logits) for x in logits][2:8]
    top3 = sorted(sorted(range(6), key=lambda j: -probs[j])[:3])
    assert top3 == [1, 3, 5]  # angles 0.1, 0.3, 0.6
    cos, sin = rope[0][0], rope[1][0]
    assert_close(last_token_attention(inputs, layer, cos, sin, slice(2, 8)), torch.tensor(probs),
                               atol=1e-5, rtol=0)
    (red,) = FastV(FastVOptions(keep=3)).reduce(1, batch, layer, rope, None, Execution()).per_row()
    assert red.keep.tolist() == top3 and red.merged is None
    # released window [start+1, start+1+N): visual 0 always kept, the first text token (angle 0.05) wins a slot
    (red,) = FastV(FastVOptions(keep=3, window_offset=1)).reduce(1, batch, layer, rope, None, Execution()).per_row()
    assert red.keep.tolist() == [0, 1, 3]


def test_pdrop_keeps_spatial_order_and_floor_counts():
    visual = [0.4, 2.0, 0.6, 1.8, 0.2, 1.6]  # score order: 4, 0, 2, then 5, 3, 1
    hidden = angle_rows([2.0, 2.5, *visual, 1.0, 0.0])
    batch, rope = one_sample_batch(hidden, 2, 6)
    method = PDrop(PDropOptions(layers=[2, 4], ratio=0.5))
    state = method.begin_prefill(batch)
    (red,) = method.reduce(1, batch, identity_decoder_layer(), rope, state, Execution()).per_row()
    assert red.keep.tolist() == [0, 2, 4]  # floor(6 * 0.5) = 3, ascending (not score order 4, 0, 2)
    assert method.stage_counts(6) == [3, 1] and method.stage_counts(N) == [288, 144]


def clip_layer_with_known_attention(dtype: torch.dtype = torch.float32) -> CLIPLayerView:
    """2-head CLIP layer (as methods see it): token (cos a, sin a, -cos a, -sin a) gives both heads
    q = k ~ (cos a, sin a)."""
    layer = CLIPEncoderLayer(CLIPVisionConfig(hidden_size=4, intermediate_size=4, num_attention_heads=2))
    flip = torch.diag(torch.tensor([1.0, 1.0, -1.0, -1.0]))
    with torch.no_grad():
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
            proj.weight.copy_(flip)
            proj.bias.zero_()
    return CLIPLayerView(layer.to(dtype))


def tower_input(patch_angles: list[float]) -> torch.Tensor:
    """[1, 1 + P, 4] layer input: CLS at angle 0, then the patches (CLS attention ranks patches by cos a)."""
    a = torch.tensor([0.0, *patch_angles])
    return torch.stack([a.cos(), a.sin(), -a.cos(), -a.sin()], dim=-1)[None]


# CLS-attention ranking by cos(angle): p1, p8, p3, p5, p0, p7, p2, p4, p6, p9
PATCH_ANGLES = [0.9, 0.05, 2.0, 0.3, -2.2, -0.5, 2.9, -1.9, 0.2, -3.0]


def test_visionzip_dominant_and_contextual_by_hand():
    features = torch.randn(1, 11, 6)  # tower index 0 = CLS, patch p at index p + 1
    method = VisionZip(VisionZipOptions(dominant=4, contextual=2))
    units = method.reduce_encoder(clip_layer_with_known_attention(), tower_input(PATCH_ANGLES), features, Execution())
    out, origin = units.features, units.origin
    # dominant: CLS + top-3 patches p1, p3, p8 (ascending); remaining p0 p2 p4 p5 p6 p7 p9, step 7 // 2 = 3:
    # targets p0 (0.9) and p5 (-0.5); by key angle p2, p6, p9 join p0 and p4, p7 join p5.
    assert origin[0].tolist() == [-1, 1, 3, 8, 0, 5]
    f = features[0]
    expected = torch.stack([f[0], f[2], f[4], f[9], f[1] + (f[3] + f[7] + f[10]) / 3, f[6] + (f[5] + f[8]) / 2])
    assert_close(out[0], expected)
    assert method.tower_tokens(LLAVA15) == 6


def test_vispruner_important_and_diverse_by_hand():
    # features at angles: p7 ~ p0 and p4 ~ p2 (5 degrees apart), p6 far from every odd-position token
    degrees = {0: 5, 1: 40, 2: 95, 3: 130, 4: 90, 5: 300, 6: 225, 7: 0, 8: 250, 9: 180}
    rad = torch.tensor([math.radians(degrees[p]) for p in range(10)])
    features = torch.cat([torch.zeros(1, 2), torch.stack([rad.cos(), rad.sin()], dim=-1)])[None]
    units = VisPruner(VisPrunerOptions(tokens=8, important_ratio=0.5)).reduce_encoder(
        clip_layer_with_known_attention(), tower_input(PATCH_ANGLES), features, Execution())
    out, origin = units.features, units.origin
    # important: p1, p8, p3, p5. Residual (descending attention): p0 p7 p2 p4 p6 p9 -> a = p0 p2 p6, b = p7 p4 p9;
    # r = min(8, 6 - 4) = 2: p0 and p2 (most similar to a b-token) go; diverse = p6, p7, p4, p9.
    assert origin[0].tolist() == [1, 3, 4, 5, 6, 7, 8, 9]
    assert_close(out[0], features[0, 1:][origin[0]])


def reference_diverse(unit: list[list[float]], residual: list[int], n_keep: int) -> list[int]:
    """The diverse-token rounds of docs/methods.md, 'VisPruner', in plain Python."""
    rest = list(residual)
    while len(rest) > n_keep:
        r = min(8, len(rest) - n_keep)
        a, b = rest[0::2], rest[1::2]
        sim = {i: max(sum(x * y for x, y in zip(unit[i], unit[j])) for j in b) for i in a}
        ranked = sorted(a, key=lambda i: -sim[i])  # stable: ties keep list order
        rest = ranked[r:] + b
    return rest


def test_diverse_subset_matches_the_plain_rounds():
    g = torch.Generator().manual_seed(0)
    tokens = torch.nn.functional.normalize(torch.randn(40, 5, generator=g), dim=-1)
    residual = torch.randperm(40, generator=g)[:29]
    for n_keep in (20, 11, 3):  # one round, two rounds with r < 8, many rounds
        expected = reference_diverse(tokens.tolist(), residual.tolist(), n_keep)
        assert diverse_subset(tokens, residual, n_keep).tolist() == expected


def test_batched_diverse_subset_equals_the_per_image_rounds():
    g = torch.Generator().manual_seed(1)
    # no round, one round, rounds with r < 8, many rounds (VisPruner 64 on 576 patches), nothing kept
    for n_tokens, n_residual, n_keep in ((60, 17, 17), (40, 29, 20), (40, 29, 11), (40, 29, 3), (576, 544, 32),
                                         (40, 29, 0)):
        tokens = torch.randn(4, n_tokens, 6, generator=g)
        residual = torch.stack([torch.randperm(n_tokens, generator=g)[:n_residual] for _ in range(4)])
        expected = torch.stack([diverse_subset(t, r, n_keep) for t, r in zip(tokens, residual)])
        assert torch.equal(diverse_subset_batched(tokens, residual, n_keep), expected)


def test_vispruner_batch_equals_one_image_at_a_time():
    g = torch.Generator().manual_seed(2)
    angles = torch.rand(3, 40, generator=g) * 6.2 - 3.1
    layer_input = torch.cat([tower_input(a.tolist()) for a in angles])
    features = torch.randn(3, 41, 6, generator=g)
    method, layer = VisPruner(VisPrunerOptions(tokens=12, important_ratio=0.5)), clip_layer_with_known_attention()
    units = method.reduce_encoder(layer, layer_input, features, Execution())
    out, origin = units.features, units.origin
    for i in range(3):
        one = method.reduce_encoder(layer, layer_input[i:i + 1], features[i:i + 1], Execution())
        assert torch.equal(origin[i], one.origin[0]) and torch.equal(out[i], one.features[0])
        assert_close(out[i], features[i, 1:][origin[i]], atol=0, rtol=0)


def test_dpc_knn_merge_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    blobs = [torch.tensor([5.0, 0]), torch.tensor([-5.0, 0]), torch.tensor([0, 5.0])]
    sizes = [6, 4, 3]
    tokens = torch.cat([c + 0.1 * torch.randn(n, 2, generator=g) for c, n in zip(blobs, sizes)])
    merged, centres = dpc_knn_merge(tokens, 3, torch.Generator().manual_seed(1))
    groups = [tokens[:6], tokens[6:10], tokens[10:]]
    got = sorted(merged.tolist())
    assert_close(torch.tensor(got), torch.tensor(sorted(g_.mean(0).tolist() for g_ in groups)))
    assert {0 if c < 6 else 1 if c < 10 else 2 for c in centres.tolist()} == {0, 1, 2}  # one centre per blob


def test_text_raters_are_the_text_tokens_above_the_mean():
    visual = torch.tensor([[1.0, 0], [2.0, 0]])
    text = torch.tensor([[3.0, 0], [0, 1.0], [-1.0, 0]])  # text 0 takes almost all the mass from both rows
    assert text_raters(visual, text).tolist() == [0]


# ---- FastV's dynamic decode on the tiny model --------------------------------------------------------------


def test_fastv_dynamic_decode_reprunes_every_step(tiny):
    """decode: dynamic (the released scripts): no cache, each step re-scores from the current last token, so every
    step's logits equal a plain pruned forward over prompt + tokens so far; the first step equals static mode."""
    tok, model = tiny
    ids, image = encode_prompt(tok, QUESTIONS[0]), stand_in_image(5)
    model.set_pruning(load_config(raw={"method": "fastv", "budget": 64}))
    static_tokens, static_logits = model.generate(ids[None], images=image, max_new_tokens=4, return_logits=True)
    model.set_pruning(load_config(raw={"method": "fastv", "budget": 64, "decode": "dynamic"}))
    tokens, logits = model.generate(ids[None], images=image, max_new_tokens=4, return_logits=True)
    assert_close(logits[0, 0], static_logits[0, 0], atol=1e-5, rtol=0)
    for step in range(tokens.shape[1]):
        recomputed = model(torch.cat([ids, tokens[0, :step].cpu()])[None], images=image)[0, -1]
        assert_close(logits[0, step], recomputed, atol=1e-5, rtol=0)
    assert model.last_stats.visual_per_layer[2:, 0].tolist() == [30] * 30  # re-pruned to keep = 30 every step
