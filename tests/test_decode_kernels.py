"""The fused decode-step kernels (visiondrop.decode_kernels, visiondrop.kernels.add_rms_norm) against the eager torch
expressions they replace, and the fused decode layer (llava.model.fused_decode) against LlamaDecoderLayer; on the
CPU through Triton's interpreter, on a GPU compiled."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TEST_DEVICE
from torch.nn import functional as F

from llava.model.compat import LAYER_CACHE_KWARG
from llava.model.graph_decode import StaticKV
from llava.model.sequence import attention_bias

pytest.importorskip("triton")


def halves(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).half().to(TEST_DEVICE)


def test_add_rms_norm_is_the_eager_add_then_the_llama_norm():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from visiondrop.kernels import add_rms_norm

    norm = LlamaRMSNorm(96, eps=1e-5)
    norm.weight.data = torch.rand(96, generator=torch.Generator().manual_seed(0)) + 0.5
    norm = norm.half().to(TEST_DEVICE)
    x = halves(2, 40, 96, seed=1, scale=4)[:, 3:37]  # a row view, as the embedding output of a decode step
    residual = halves(2, 34, 96, seed=2, scale=4)
    total, normed = add_rms_norm(x, residual, norm.weight, norm.variance_epsilon)
    expected = x + residual
    assert torch.equal(total, expected)  # one fp16 rounding of the exact sum, as torch's add
    # fp32 statistics summed in another order: an output may move by one fp16 step, rarely.
    torch.testing.assert_close(normed, norm(expected), rtol=2**-10, atol=0)
    assert (normed == norm(expected)).float().mean() > 0.99
    with pytest.raises(ValueError, match="residual"):
        add_rms_norm(x, residual[:, :5], norm.weight, norm.variance_epsilon)


def test_silu_mul_is_the_eager_expression():
    from visiondrop.decode_kernels import silu_mul

    gate, up = halves(3, 1, 2500, seed=3, scale=3), halves(3, 1, 2500, seed=4, scale=3)  # 8 blocks, one partial
    ours, expected = silu_mul(gate, up), F.silu(gate) * up
    # fp16(silu) then the fp16 product, as eager; exp / division may differ by an fp32 ulp, which can move the
    # rounded SiLU by one fp16 step (rarely), and the product with it.
    torch.testing.assert_close(ours, expected, rtol=2**-9, atol=2**-24)
    assert (ours == expected).float().mean() > 0.99
    with pytest.raises(ValueError, match="contiguous fp16"):
        silu_mul(gate, up.float())


def reference_step(q, k, v, cos, sin, keys, values, key_mask, slot, scale):
    """The eager step: RoPE as transformers' expression, index_copy_ into the cache, SDPA with the key mask."""
    from transformers.models.llama.modeling_llama import rotate_half

    batch, _, width = q.shape
    heads, head_dim = keys.shape[1], keys.shape[3]

    def rotate(x):
        x = x.view(batch, 1, heads, head_dim).transpose(1, 2)
        return x * cos[:, None] + rotate_half(x) * sin[:, None]

    q, k = rotate(q), rotate(k)
    keys.index_copy_(2, slot, k)
    values.index_copy_(2, slot, v.view(batch, 1, heads, head_dim).transpose(1, 2))
    bias = attention_bias(key_mask, True, 1, q.dtype, "sdpa")
    out = F.scaled_dot_product_attention(q.float(), keys.float(), values.float(), attn_mask=bias.float(),
                                         scale=scale)
    return out.half().transpose(1, 2).reshape(batch, 1, width)


@pytest.mark.parametrize("batch,heads,head_dim,capacity,slot", [
    (1, 4, 32, 64, 37),      # one chunk: no combine
    (2, 3, 16, 448, 300),    # four chunks, the last ones partly or wholly after the slot
    (1, 2, 128, 384, 256)])  # the slot first in its chunk; 7B head size
def test_decode_attention_is_rope_cache_write_and_sdpa(batch, heads, head_dim, capacity, slot):
    from visiondrop.decode_kernels import decode_attention

    width = heads * head_dim
    q, k, v = (halves(batch, 1, width, seed=s, scale=2) for s in (5, 6, 7))
    angles = torch.randn(batch, 1, head_dim, generator=torch.Generator().manual_seed(8)) * 3
    cos, sin = angles.cos().half().to(TEST_DEVICE), angles.sin().half().to(TEST_DEVICE)
    keys, values = halves(batch, heads, capacity, head_dim, seed=9), halves(batch, heads, capacity, head_dim, seed=10)
    key_mask = torch.zeros(batch, capacity, dtype=torch.bool, device=TEST_DEVICE)
    key_mask[:, :slot + 1] = True
    key_mask[-1, slot - 40:slot - 3] = False  # the last row's prompt is padded
    at = torch.tensor([slot], device=TEST_DEVICE)
    expected_keys, expected_values = keys.clone(), values.clone()
    expected = reference_step(q, k, v, cos, sin, expected_keys, expected_values, key_mask, at, head_dim ** -0.5)
    out = decode_attention(q, k, v, cos, sin, keys, values, key_mask, at, head_dim ** -0.5)
    assert torch.equal(keys, expected_keys) and torch.equal(values, expected_values)  # RoPE bit-equal, one slot
    # fp32 logits / softmax / value sums in another order and split over key chunks, rounded once to fp16 as the
    # fp32 reference: at most one fp16 step apart (bit-equal here for head size 16 / 32, 99 % for 128).
    torch.testing.assert_close(out, expected, rtol=2**-10, atol=2**-14)


def test_decode_attention_rejects_what_it_cannot_compute():
    from visiondrop.decode_kernels import decode_attention

    q = halves(1, 1, 48, seed=0)
    cache = halves(1, 2, 64, 24, seed=1)
    mask = torch.ones(1, 64, dtype=torch.bool, device=TEST_DEVICE)
    cos = halves(1, 1, 24, seed=2)
    with pytest.raises(ValueError, match="power-of-two"):
        decode_attention(q, q, q, cos, cos, cache, cache.clone(), mask, torch.tensor([3]), 0.2)
    with pytest.raises(ValueError, match="do not match"):
        decode_attention(q, q, q, cos, cos, cache, cache.clone(), mask[:, :9], torch.tensor([3]), 0.2)


@pytest.fixture(scope="module")
def fp16_layers(load_tiny):
    _, model = load_tiny()
    return copy.deepcopy(model.model).to(TEST_DEVICE, torch.float16).requires_grad_(False)


def test_fused_decode_layers_equal_llama_decoder_layers(fp16_layers):
    """Three layers of a decode step, with the residual carried between them and into the final norm, against
    the module layers over the same static cache."""
    from llava.model.fused_decode import decode_layer, final_norm

    lm = fp16_layers
    config = lm.config
    batch, capacity, slot = 2, 192, 150
    heads, head_dim = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    hidden = halves(batch, 1, config.hidden_size, seed=11)
    positions = torch.tensor([[slot], [slot - 20]], device=TEST_DEVICE)
    rope = lm.rotary_emb(hidden, positions)
    key_mask = torch.zeros(batch, capacity, dtype=torch.bool, device=TEST_DEVICE)
    key_mask[:, :slot + 1] = True
    key_mask[1, slot - 20:slot] = False  # the second row is 20 tokens shorter
    at = torch.tensor([slot], device=TEST_DEVICE)
    layers = range(4, 7)
    prompt = {i: (halves(batch, heads, capacity, head_dim, seed=20 + i, scale=2),
                  halves(batch, heads, capacity, head_dim, seed=40 + i)) for i in layers}

    eager = StaticKV(None, 0)
    eager.buffers = {i: (k.clone(), v.clone()) for i, (k, v) in prompt.items()}
    eager.slots = dict.fromkeys(layers, at)
    mask = attention_bias(key_mask, True, 1, hidden.dtype, "sdpa")
    expected = hidden
    for i in layers:
        expected = lm.layers[i](expected, attention_mask=mask, position_embeddings=rope, use_cache=True,
                                **{LAYER_CACHE_KWARG: eager})
    expected = lm.norm(expected)

    fused = {i: (k.clone(), v.clone()) for i, (k, v) in prompt.items()}
    state, residual = hidden, None
    for i in layers:
        state, residual = decode_layer(lm.layers[i], state, residual, rope, fused[i], key_mask, at)
    ours = final_norm(lm.norm, state, residual)
    others = torch.arange(capacity, device=TEST_DEVICE) != slot
    for i in layers:  # only the slot is written, with the eager key / value up to the layer inputs' rounding
        for ours_cache, eager_cache, before in zip(fused[i], eager.buffers[i], prompt[i]):
            assert torch.equal(ours_cache[:, :, others], before[:, :, others])
            torch.testing.assert_close(ours_cache[:, :, slot], eager_cache[:, :, slot], rtol=2**-8, atol=2**-10)
    # Summation orders (norm statistics, attention) move some values by an fp16 step, which propagates through
    # the layers: ~60 % of the outputs are bit-equal, the rest an fp16 step or two apart (outputs up to ~3).
    torch.testing.assert_close(ours, expected, rtol=2**-8, atol=2**-8)
