"""Generation for LlavaLlamaForCausalLM: one prefill, then one token loop with a per-token callback.

`generate` prefills the spliced prompt (pruning included) and hands the first logits to `decode_tokens`, the one
token loop, which picks a token, calls back, and asks `next_logits` for the next step: a cached decode step (eager
over `DynamicCache`, `decode_step`; or replayed from a CUDA graph over a static cache, llava.model.graph_decode), or,
for methods without cached decode, a whole new prefill over prompt + generated tokens. `model.generate` and the
efficiency benchmark (benchmarks.runner, whose callback marks its timer per token) both run this loop.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.cache_utils import DynamicCache

from llava.model.graph_decode import StaticKV
from llava.model.sequence import attention_bias

# Attention kernels of an eager decode step, whose key length changes every step in every layer group: flash /
# memory-efficient / math, not cuDNN's SDPA, which builds and caches an execution plan per shape.
DECODE_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@dataclass
class DecodeTables:
    """Per segment and decode step: RoPE cos / sin [B, S, steps, d]; per segment the additive key mask over prompt
    + steps (None without padding) and the prompt length (the mask is cut to the keys a step sees)."""

    cos: torch.Tensor
    sin: torch.Tensor
    masks: list[torch.Tensor | None]
    prompt_lengths: list[int]


def decode_tables(lm, segments: list, new_tokens: int, like: torch.Tensor) -> DecodeTables:
    """Every decode step's RoPE and attention mask for every segment of LlavaLlamaModel `lm`, built once after the
    prefill (one rotary call for all segments and steps), so a step only indexes them (`like`: a tensor of the
    dtype)."""
    steps = torch.arange(max(new_tokens, 1), device=like.device)
    positions = torch.stack([s.next_position for s in segments], dim=1)[..., None] + steps  # [B, S, steps]
    cos, sin = lm.rotary_emb(like, positions.flatten(1))
    shape = (*positions.shape, cos.shape[-1])
    masks = []
    for seg in segments:
        if not seg.padded:
            masks.append(None)
            continue
        grown = torch.cat([seg.key_mask, seg.key_mask.new_ones(seg.key_mask.shape[0], len(steps))], dim=1)
        masks.append(attention_bias(grown, True, 1, like.dtype, lm.attn_implementation))
    return DecodeTables(cos.view(shape), sin.view(shape), masks, [s.key_mask.shape[1] for s in segments])


def decode_step(lm, embeds: torch.Tensor, cache: DynamicCache, segments: list, tables: DecodeTables,
                step: int) -> torch.Tensor:
    """Cached decode step `step` (0 = the first token after the prompt) of `lm` for a [B, 1, D] token; the final
    hidden states (after the norm)."""
    hidden = embeds
    bounds = [s.first_layer for s in segments[1:]] + [len(lm.layers)]
    for k, (seg, stop) in enumerate(zip(segments, bounds)):
        rope = tables.cos[:, k, step:step + 1], tables.sin[:, k, step:step + 1]
        mask = tables.masks[k]
        if mask is not None:  # keys: the segment's prompt, the tokens decoded so far, this one
            mask = mask[..., :tables.prompt_lengths[k] + step + 1]
        hidden = lm.run_layers(hidden, mask, rope, cache, seg.first_layer, stop)
    return lm.norm(hidden)


def fast_path_applies(model) -> bool:
    """Whether `generate(cuda_graph=None)` takes the CUDA-graph path: a family that has it (`supports_fast_path`),
    the whole model on one GPU in fp16 / bf16 with sdpa or eager attention (fp32 and CPU runs stay eager)."""
    return (model.supports_fast_path and model.device.type == "cuda"
            and model.dtype in (torch.float16, torch.bfloat16)
            and model.model.attn_implementation in ("sdpa", "eager") and model.decode_graphs.on_one_device())


def vision_graphs(model, enabled: bool) -> AbstractContextManager:
    """While open, the vision tower replays its layers from CUDA graphs where they apply (`enabled`)."""
    tower = model.model.vision_tower
    return nullcontext() if tower is None else tower.graphed(enabled)


def new_cache(model, new_tokens: int, cuda_graph: bool = False) -> DynamicCache | StaticKV:
    """The KV cache of a prefill followed by `new_tokens` decode steps (static buffers for CUDA graphs)."""
    return model.decode_graphs.new_cache(new_tokens) if cuda_graph else DynamicCache()


def decoder(model, cache: DynamicCache | StaticKV, segments: list, new_tokens: int) -> Callable:
    """After a prefill that filled `cache`: a function token [B] -> next-token logits [B, V] (fp32), called
    once per decode step, at most `new_tokens` times (a graph replay for a static cache, else the eager
    `decode_step`)."""
    if isinstance(cache, StaticKV):
        return model.decode_graphs.stepper(cache, segments)

    lm = model.model
    tables = decode_tables(lm, segments, new_tokens, model.lm_head.weight)
    steps = iter(range(new_tokens))

    def step(token: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(DECODE_ATTENTION):
            hidden = decode_step(lm, lm.embed_tokens(token)[:, None], cache, segments, tables, next(steps))
        return model.lm_head(hidden[:, -1]).float()

    return step


def _pick(logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float | None) -> torch.Tensor:
    """Greedy or temperature / nucleus sampling from [B, V] logits."""
    if not do_sample or temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > top_p
        probs = probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
    return torch.multinomial(probs, 1)[:, 0]


def decode_tokens(logits: torch.Tensor, next_logits: Callable[[torch.Tensor], torch.Tensor], max_new_tokens: int,
                  min_new_tokens: int = 0, do_sample: bool = False, temperature: float = 1.0,
                  top_p: float | None = None, eos_token_id: int | None = None, pad_token_id: int = 0,
                  on_token: Callable[[torch.Tensor], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The token loop: from the prompt's next-token logits [B, V], pick up to `max_new_tokens` tokens (EOS
    masked before `min_new_tokens`), `next_logits(token)` giving each following step's logits; rows that emitted
    EOS get `pad_token_id`, and the loop stops once every row has. `on_token(token)` runs after each token's stop
    check (a host sync). Returns the tokens [B, n] and the per-step logits [B, n, V]."""
    eos = eos_token_id
    done = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    tokens, step_logits = [], []
    for step in range(max_new_tokens):
        if step < min_new_tokens and eos is not None:
            logits[:, eos] = float("-inf")
        step_logits.append(logits)
        token = _pick(logits, do_sample, temperature, top_p).masked_fill(done, pad_token_id)
        tokens.append(token)
        done |= token == eos if eos is not None else torch.zeros_like(done)
        finished = bool(done.all()) or step == max_new_tokens - 1
        if on_token is not None:
            on_token(token)
        if finished:
            break
        logits = next_logits(token)
    return torch.stack(tokens, dim=1), torch.stack(step_logits, dim=1)


@torch.no_grad()
def generate(model, input_ids: torch.Tensor, images=None, image_sizes=None, attention_mask=None,
             max_new_tokens: int = 128, min_new_tokens: int = 0, do_sample: bool = False, temperature: float = 1.0,
             top_p: float | None = None, eos_token_id: int | None = None, pad_token_id: int = 0,
             return_logits: bool = False, use_cache: bool | None = None, cuda_graph: bool | None = None,
             on_prefill: Callable[[DynamicCache | StaticKV | None], None] | None = None,
             on_token: Callable[[torch.Tensor], None] | None = None):
    """`LlavaLlamaForCausalLM.generate` (its docstring says what the arguments do), plus two callbacks:
    `on_prefill(cache)` once the prefill filled the KV cache (None without one), `on_token(token)` after every
    generated token (`decode_tokens`)."""
    eos = model.config.eos_token_id if eos_token_id is None else eos_token_id
    if use_cache is None:
        use_cache = model.model.method.cached_decode if model.model.method is not None else True
    if cuda_graph is None:
        cuda_graph = fast_path_applies(model)
    cuda_graph = cuda_graph and model.supports_fast_path  # a family without the path falls back to eager
    with vision_graphs(model, cuda_graph):
        batch = model.prepare_multimodal_batch(input_ids, attention_mask, images, image_sizes)
    cached = use_cache and max_new_tokens > 1
    cache = new_cache(model, max_new_tokens - 1, cuda_graph) if cached else None
    graphs = model.decode_graphs if cuda_graph and use_cache else None
    final, last_index, segments, model.last_stats = model.model.prefill(batch, cache, graphs)
    if on_prefill is not None:
        on_prefill(cache)
    rows = torch.arange(final.shape[0], device=final.device)
    logits = model.lm_head(final[rows, last_index]).float()
    if cached:
        next_logits = decoder(model, cache, segments, max_new_tokens - 1)
    else:
        def next_logits(token: torch.Tensor) -> torch.Tensor:  # the pruned prefill over prompt + tokens so far
            nonlocal batch
            batch = batch.append(model.model.embed_tokens(token)[:, None])
            final, last_index, _, model.last_stats = model.model.prefill(batch, None)
            return model.lm_head(final[rows, last_index]).float()

    tokens, step_logits = decode_tokens(logits, next_logits, max_new_tokens, min_new_tokens, do_sample, temperature,
                                        top_p, eos, pad_token_id, on_token)
    return (tokens, step_logits) if return_logits else tokens
