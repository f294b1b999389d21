"""The Triton score and selection kernels against the torch reference (on the CPU through Triton's interpreter, on a GPU
compiled), and CUDA-graph replay of a VisionDrop stage against the eager stage (GPU only)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TEST_DEVICE

from llava.model.language_model.llava_llama import LlamaLayerView
from llava.model.multimodal_encoder.clip_encoder import CLIPLayerView
from llava.model.sequence import SequenceBatch
from visiondrop.config import load_config
from visiondrop.execution import Execution, ExecutionOptions
from visiondrop.merging import ascending_split, contextual_merge
from visiondrop.methods import build_method
from visiondrop.scoring import attention_to_columns

pytest.importorskip("triton")


def random_qk(batch, first, n, heads, head_dim, extra_keys, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, n, heads, head_dim, generator=g) * 1.5
    k = torch.randn(batch, first + n + extra_keys, heads, head_dim, generator=g) * 1.5
    return q.half().to(TEST_DEVICE), k.half().to(TEST_DEVICE)


@pytest.mark.parametrize("shape", [(1, 5, 70, 2, 32, 3), (2, 35, 130, 2, 16, 0), (1, 0, 64, 1, 64, 9),
                                   (1, 3, 1100, 1, 16, 0)])  # >= 1024 visual tokens: the 64 x 64 tiles
def test_triton_score_equals_the_reference(shape):
    from visiondrop.kernels import visual_attention_scores

    batch, first, n, heads, head_dim, extra = shape
    q, k = random_qk(batch, first, n, heads, head_dim, extra, seed=n)
    ours = visual_attention_scores(q, k, first)
    query_pos = torch.arange(first, first + n, device=q.device)
    reference = attention_to_columns(q, k, query_pos, slice(first, first + n))
    assert ours.dtype == reference.dtype == torch.float16 and ours.shape == (batch, n)
    # Same rounding points: equal up to the fp32 summation order (one fp16 step at most).
    torch.testing.assert_close(ours, reference, rtol=2**-10, atol=0)
    assert torch.equal(ours.topk(n // 4).indices.sort().values, reference.topk(n // 4).indices.sort().values)


def test_triton_score_rejects_what_it_cannot_compute():
    from visiondrop.kernels import visual_attention_scores

    q, k = random_qk(1, 4, 32, 2, 32, 0, seed=0)
    with pytest.raises(ValueError, match="do not cover"):
        visual_attention_scores(q, k[:, :20], 4)
    with pytest.raises(ValueError, match="take fp16"):
        visual_attention_scores(q.float(), k.float(), 4)
    with pytest.raises(ValueError, match="power-of-two"):
        visual_attention_scores(q[..., :24], k[..., :24], 4)


def reference_selection(parts, segment, keys, d, c, fusion, visible):
    """The torch path of a stage from the score's partial sums on: top-d split, then contextual merging."""
    n = parts.shape[-1]
    scores = (parts.sum(dim=1) / n).half()
    if visible:  # VD-2: key j is seen by the n - j queries at or after it
        scores = scores * (n / torch.arange(n, 0, -1, device=scores.device)).half()
    dom, rest = ascending_split(n, torch.topk(scores, d, dim=-1, sorted=False).indices)
    merged, targets = contextual_merge(segment, keys.mean(dim=-2), c, fusion, rest=rest)
    return dom, merged, rest[:, targets]


@pytest.mark.parametrize("batch,n,d,c,fusion,visible", [
    (2, 90, 20, 4, "target_plus_mean", False), (1, 300, 61, 9, "size_weighted", False),
    (1, 120, 30, 6, "target_plus_mean", True), (1, 50, 10, 0, "target_plus_mean", False),  # no merging
    (1, 40, 30, 10, "target_plus_mean", False),  # every remaining token is a target
    (1, 1600, 200, 8, "size_weighted", False)])  # group sums in two splits
def test_fused_selection_equals_the_torch_path(batch, n, d, c, fusion, visible):
    from visiondrop.selection_kernels import select_and_merge

    g = torch.Generator().manual_seed(n)
    parts = torch.rand(batch, 3, n, generator=g).to(TEST_DEVICE)
    segment = torch.randn(batch, n, 64, generator=g).half().to(TEST_DEVICE)
    keys = torch.randn(batch, n, 2, 32, generator=g).half().to(TEST_DEVICE)
    ours = select_and_merge(parts, segment, keys, d, c, fusion, visible)
    expected = reference_selection(parts, segment, keys, d, c, fusion, visible)
    assert [tuple(x.shape) for x in ours] == [(batch, d), (batch, c, 64), (batch, c)]
    assert all(torch.equal(a, b) for a, b in zip(ours, expected))


def test_fused_selection_takes_the_lowest_indices_among_ties():
    from visiondrop.selection_kernels import select_and_merge

    g = torch.Generator().manual_seed(0)
    n, d = 64, 21
    parts = torch.randint(1, 4, (1, 1, n), generator=g).float().mul(n / 8).to(TEST_DEVICE)  # scores 1/8, 2/8, 3/8
    segment = torch.randn(1, n, 32, generator=g).half().to(TEST_DEVICE)
    dom, _, _ = select_and_merge(parts, segment, segment.unflatten(-1, (2, 16)), d, 0)
    scores = parts[0, 0]
    expected = torch.sort(scores, descending=True, stable=True).indices[:d].sort().values  # ties: lowest first
    assert 0 < int((scores == scores[expected[-1]]).sum()) - int((scores[expected] == scores[expected[-1]]).sum())
    assert torch.equal(dom[0], expected)
    if scores.is_cuda:  # the torch path's CUDA top-k takes the same tied indices
        assert torch.equal(scores.topk(d, sorted=False).indices.sort().values, expected)


def test_fused_selection_rejects_what_it_cannot_compute():
    from visiondrop.selection_kernels import select_and_merge

    parts = torch.rand(1, 2, 30).to(TEST_DEVICE)
    segment = torch.randn(1, 30, 32).half().to(TEST_DEVICE)
    keys = segment.unflatten(-1, (2, 16))
    with pytest.raises(ValueError, match="cannot keep 25 \\+ 6 of 30"):
        select_and_merge(parts, segment, keys, 25, 6)
    with pytest.raises(ValueError, match="fp16"):
        select_and_merge(parts, segment.float(), keys.float(), 5, 2)
    with pytest.raises(ValueError, match="power-of-two head_dim"):
        select_and_merge(parts, segment, segment.unflatten(-1, (4, 8)), 5, 2)


def test_fused_encoder_stage_equals_the_torch_stage():
    from transformers import CLIPVisionConfig
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer

    from visiondrop.encoder_stage import dominant_contextual

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4)  # head_dim 16
    layer = CLIPEncoderLayer(config).to(TEST_DEVICE, torch.float16)
    # A peaked CLS attention: a random layer's is nearly uniform, so its fp16 scores tie at the cut, where a CPU
    # top-k may pick other indices than the lowest.
    layer.self_attn.q_proj.weight.data *= 30
    g = torch.Generator().manual_seed(0)
    layer_input, features = (torch.randn(2, 577, 64, generator=g).half().to(TEST_DEVICE) for _ in range(2))
    view = CLIPLayerView(layer)
    fused = dominant_contextual(layer_input, features, view, 42, 6, fused=True)
    reference = dominant_contextual(layer_input, features, view, 42, 6)
    assert fused[0].shape == (2, 48, 64) and bool((fused[1][:, 0] == -1).all())  # CLS first
    assert all(torch.equal(a, b) for a, b in zip(fused, reference))


def stage_inputs(tiny_llm_layer, rotary, batch: int, first: int, n_vis: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    length = first + n_vis + 7
    hidden = torch.randn(batch, length, tiny_llm_layer.self_attn.q_proj.in_features, generator=g).half()
    hidden = hidden.to(TEST_DEVICE)
    positions = torch.arange(length, device=TEST_DEVICE)[None].expand(batch, -1)
    seq = SequenceBatch(hidden=hidden, key_mask=torch.ones(batch, length, dtype=torch.bool, device=TEST_DEVICE),
                        positions=positions, visual_start=torch.full((batch,), first),
                        visual_len=torch.full((batch,), n_vis), origin=[torch.arange(n_vis)] * batch)
    return seq, rotary(hidden, positions)


def visiondrop_with(llm: dict | None = None, **execution) -> tuple:
    """An in-LLM-only VisionDrop with `llm` options and its execution layer with `execution` options."""
    raw = {"method": "visiondrop", "encoder": {"enabled": False},
           "llm": {"tokens": [[20, 4], [12, 3], [8, 2]], **(llm or {})}, "execution": execution}
    config = load_config(raw=raw)
    return build_method(config), Execution(config.execution)


@pytest.fixture(scope="module")
def fp16_layer(load_tiny):
    _, model = load_tiny()
    layer = copy.deepcopy(model.model.layers[8]).to(TEST_DEVICE, torch.float16)
    return LlamaLayerView(layer), model.model.rotary_emb


@pytest.mark.parametrize("options", [{}, {"divisor": "visible"}])
def test_stage_is_the_same_with_either_kernels(fp16_layer, options):
    layer, rotary = fp16_layer
    batch, rope = stage_inputs(layer.layer, rotary, batch=2, first=9, n_vis=90, seed=1)
    method, triton = visiondrop_with(options, kernels="triton")
    torch_run = visiondrop_with(options, kernels="torch")[1]
    triton_path = method.reduce(1, batch, layer, rope, None, triton).shared
    torch_path = method.reduce(1, batch, layer, rope, None, torch_run).shared
    assert torch.equal(triton_path.keep, torch_path.keep)
    assert torch.equal(triton_path.merged_index, torch_path.merged_index)
    assert torch.equal(triton_path.merged, torch_path.merged)


@pytest.mark.skipif(not torch.cuda.is_available() or TEST_DEVICE != "cuda", reason="CUDA graphs need a GPU")
def test_graph_replay_equals_the_eager_stage(fp16_layer):
    layer, rotary = fp16_layer
    (method, graphed), (_, eager) = visiondrop_with(), visiondrop_with(graph_max_tokens=0)
    for seed in (1, 2, 3):  # the first call captures, later ones replay with new values
        batch, rope = stage_inputs(layer.layer, rotary, batch=2, first=9, n_vis=90, seed=seed)
        a = method.reduce(1, batch, layer, rope, None, graphed).shared
        b = method.reduce(1, batch, layer, rope, None, eager).shared
        assert torch.equal(a.keep, b.keep) and torch.equal(a.merged, b.merged)
        assert torch.equal(a.merged_index, b.merged_index)
    assert len(graphed.graphs.entries) == 1 and not eager.graphs.entries


@pytest.mark.skipif(not torch.cuda.is_available() or TEST_DEVICE != "cuda", reason="CUDA graphs need a GPU")
def test_graph_replay_equals_the_eager_encoder_stage(load_tiny):
    _, model = load_tiny()
    tower = model.get_vision_tower().vision_tower
    layer = CLIPLayerView(copy.deepcopy(tower.encoder.layers[-2]).to(TEST_DEVICE, torch.float16))
    width = layer.layer.self_attn.q_proj.in_features
    method = build_method(load_config(raw={"method": "visiondrop", "encoder": {"dominant": 42, "contextual": 6}}))
    graphed, eager = Execution(), Execution(ExecutionOptions(graph_max_tokens=0))
    for seed in (1, 2, 3):  # five crops, as a NeXT image; the first call captures
        g = torch.Generator().manual_seed(seed)
        layer_input = torch.randn(5, 577, width, generator=g).half().to(TEST_DEVICE)
        features = torch.randn(5, 577, width, generator=g).half().to(TEST_DEVICE)
        a = method.reduce_encoder(layer, layer_input, features, graphed)
        b = method.reduce_encoder(layer, layer_input, features, eager)
        assert torch.equal(a.features, b.features) and torch.equal(a.origin, b.origin)
        assert a.features.shape == (5, 48, width)
    assert len(graphed.graphs.entries) == 1 and not eager.graphs.entries


def test_triton_rope_is_bit_equal_to_the_eager_expression():
    from transformers.models.llama.modeling_llama import rotate_half

    from visiondrop.kernels import rope

    g = torch.Generator().manual_seed(0)
    # ~70k products of fp16 values: hundreds land exactly halfway between two fp16 values (ties to even)
    x = (torch.randn(2, 64, 4, 128, generator=g) * 3).half().to(TEST_DEVICE)
    angles = torch.randn(2, 67, 128, generator=g)
    cos, sin = angles.cos().half().to(TEST_DEVICE), angles.sin().half().to(TEST_DEVICE)
    cos, sin = cos[:, 2:66], sin[:, 2:66]  # row views, as the scoring passes them
    expected = x * cos[..., None, :] + rotate_half(x) * sin[..., None, :]
    assert torch.equal(rope(x, cos, sin), expected)
    with pytest.raises(ValueError, match="do not match"):
        rope(x, cos[:, :4], sin[:, :4])


def test_triton_rms_norm_matches_the_llama_module():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from visiondrop.kernels import rms_norm

    g = torch.Generator().manual_seed(0)
    norm = LlamaRMSNorm(96, eps=1e-5)
    norm.weight.data = torch.rand(96, generator=g) + 0.5
    norm = norm.half().to(TEST_DEVICE)
    x = (torch.randn(2, 40, 96, generator=g) * 4).half().to(TEST_DEVICE)[:, 3:37]  # a row view
    ours, expected = rms_norm(x, norm.weight, norm.variance_epsilon), norm(x)
    # fp32 statistics summed in another order: an output may move by one fp16 step, rarely.
    torch.testing.assert_close(ours, expected, rtol=2**-10, atol=0)
    assert (ours == expected).float().mean() > 0.99
    with pytest.raises(ValueError, match="does not fit"):
        rms_norm(x, norm.weight.float(), 1e-5)
