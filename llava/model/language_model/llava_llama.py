"""LLaVA on a LLaMA/Vicuna decoder: config, a decoder loop with stage boundaries, and generation.

The decoder loop is our own (transformers' LlamaDecoderLayer, RMSNorm and rotary embedding are used as
modules, never edited). A run is a prefill over the spliced prompt followed by cached decode steps. Layers
are grouped into *segments*: a segment starts at layer 0 and at every stage boundary where a reducer
changed the sequence; all layers of a segment see the same tokens, mask and positions. During decode each
segment keeps its own key mask and next position, so a pruned layer group attends to its shorter cache and
a new token takes, in each group, the position after the group's last real position.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AutoConfig, LlamaConfig
from transformers.cache_utils import DynamicCache
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

from llava.model.compat import LAYER_CACHE_KWARG
from llava.model.graph_decode import DecodeGraphs, StaticKV
from llava.model.llava_arch import LlavaMetaModel, LlavaMultimodalMixin
from llava.model.sequence import SequenceBatch, attention_bias, pad_rows
from visiondrop.graphs import weights_changed, weights_version
from visiondrop.reduction import Reduction

# Attention kernels of an eager decode step, whose key length changes every step in every layer group: flash /
# memory-efficient / math, not cuDNN's SDPA, which builds and caches an execution plan per shape.
DECODE_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


class LlavaConfig(LlamaConfig):
    """LLaMA config plus the LLaVA `mm_*` fields (kept as plain attributes)."""

    model_type = "llava_llama"


AutoConfig.register("llava_llama", LlavaConfig)


class StageReducer(Protocol):
    """What the decoder loop needs from an in-LLM pruning method (see visiondrop.methods)."""

    boundaries: tuple[int, ...]
    compact_positions: bool
    cached_decode: bool  # False: every decode step re-runs the pruned prefill over prompt + generated tokens
    score_layer_offset: int  # 0: score with the layer about to run; -1: with the previous layer (its input too)

    def begin_prefill(self, batch: SequenceBatch) -> None: ...

    def reduce(self, stage: int, layer_idx: int, batch: SequenceBatch, layer: nn.Module,
               rope: tuple) -> Reduction | list: ...


@dataclass
class Segment:
    """A run of layers that share one token set: the prompt's key mask, the position of the first new token."""

    first_layer: int
    key_mask: torch.Tensor
    next_position: torch.Tensor
    padded: bool


@dataclass
class ForwardStats:
    """Visual-token accounting of the last prefill: counts per layer and sample, kept origins per stage."""

    visual_per_layer: torch.Tensor
    stage_origins: list[list[torch.Tensor]] = field(default_factory=list)

    @property
    def average_visual_tokens(self) -> list[float]:
        """Budget actually used by each sample: mean visual tokens over decoder layers."""
        return self.visual_per_layer.float().mean(dim=0).tolist()


class LlavaLlamaModel(LlavaMetaModel):
    """Embeddings, decoder layers, final norm, plus the multimodal modules of LlavaMetaModel. Another model
    family runs this loop over its own transformers modules by naming their classes (`layer_class`, ...)."""

    layer_class, norm_class, rotary_class = LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

    def __init__(self, config: LlavaConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(self.layer_class(config, i) for i in range(config.num_hidden_layers))
        self.norm = self.norm_class(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = self.rotary_class(config=config)
        self.reducer: StageReducer | None = None

    @property
    def attn_implementation(self) -> str:
        return self.config._attn_implementation or "sdpa"

    def _mask_and_rope(self, hidden, key_mask, padded: bool, positions) -> tuple:
        """The attention mask and RoPE (cos, sin) shared by every layer of a segment."""
        mask = attention_bias(key_mask, padded, hidden.shape[1], hidden.dtype, self.attn_implementation)
        return mask, self.rotary_emb(hidden, positions)

    def _run_layers(self, hidden, mask, rope, cache, first: int, stop: int) -> torch.Tensor:
        for layer in self.layers[first:stop]:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rope, use_cache=cache is not None,
                           **{LAYER_CACHE_KWARG: cache})
        return hidden

    def prefill(self, batch: SequenceBatch, cache: DynamicCache | StaticKV | None,
                graphs: DecodeGraphs | None = None) -> tuple:
        """Run all layers over the prompt; the reducer acts at its boundaries. Returns the final hidden
        states (after the norm), each row's last real index, the segments for decoding, and the accounting.
        With `graphs` (and a static or no cache) the layer segments replay from CUDA graphs where they apply."""
        if graphs is not None and isinstance(cache, DynamicCache):
            raise ValueError("graph-replayed prefill segments need a static KV cache (or none)")

        def run_layers(hidden, mask, rope, first, stop):
            if graphs is None:
                return self._run_layers(hidden, mask, rope, cache, first, stop)
            return graphs.prefill_layers(cache, hidden, mask, rope, first, stop)

        n_layers = len(self.layers)
        boundaries = sorted(self.reducer.boundaries) if self.reducer is not None else []
        if boundaries and boundaries[-1] >= n_layers:
            raise ValueError(f"pruning boundary after layer {boundaries[-1]} but the model has {n_layers} layers")
        offset = self.reducer.score_layer_offset if boundaries else 0
        if offset not in (0, -1):
            raise ValueError(f"score_layer_offset={offset}: only 0 (next layer) or -1 (previous layer) are supported")
        if boundaries:
            self.reducer.begin_prefill(batch)
        counts = torch.zeros(n_layers, batch.hidden.shape[0], dtype=torch.long)
        stage_origins = [batch.origin]
        segments = []
        starts = [0, *boundaries]
        rope = None
        for stage, (first, stop) in enumerate(zip(starts, [*boundaries, n_layers])):
            if stage > 0:  # positions are still those of the segment that just ran: its RoPE scores this stage
                reductions = self.reducer.reduce(stage, first, batch, self.layers[first + offset], rope)
                batch = apply_reductions(batch, reductions, self.reducer.compact_positions)
                stage_origins.append(batch.origin)
            counts[first:stop] = batch.visual_len
            padded = batch.has_padding
            mask, rope = self._mask_and_rope(batch.hidden, batch.key_mask, padded, batch.positions)
            # A method scoring with the previous layer's attention also needs that layer's input: keep it.
            split = stop + offset if stop < n_layers else stop
            hidden = run_layers(batch.hidden, mask, rope, first, split)
            if split < stop:
                batch = replace(batch, layer_input=hidden)
                hidden = run_layers(hidden, mask, rope, split, stop)
            batch = batch.with_hidden(hidden)
            segments.append(Segment(first, batch.key_mask, batch.next_position(), padded))
        final = self.norm(batch.hidden)
        last_index = (batch.lengths - 1).to(final.device)
        return final, last_index, segments, ForwardStats(counts, stage_origins)

    def decode_tables(self, segments: list[Segment], new_tokens: int, like: torch.Tensor) -> DecodeTables:
        """Every decode step's RoPE and attention mask for every segment, built once after the prefill (one
        rotary call for all segments and steps), so a step only indexes them (`like`: a tensor of the dtype)."""
        steps = torch.arange(max(new_tokens, 1), device=like.device)
        positions = torch.stack([s.next_position for s in segments], dim=1)[..., None] + steps  # [B, S, steps]
        cos, sin = self.rotary_emb(like, positions.flatten(1))
        shape = (*positions.shape, cos.shape[-1])
        masks = []
        for seg in segments:
            if not seg.padded:
                masks.append(None)
                continue
            grown = torch.cat([seg.key_mask, seg.key_mask.new_ones(seg.key_mask.shape[0], len(steps))], dim=1)
            masks.append(attention_bias(grown, True, 1, like.dtype, self.attn_implementation))
        return DecodeTables(cos.view(shape), sin.view(shape), masks,
                            [s.key_mask.shape[1] for s in segments])

    def decode_step(self, embeds: torch.Tensor, cache: DynamicCache, segments: list[Segment],
                    tables: DecodeTables, step: int) -> torch.Tensor:
        """Cached decode step `step` (0 = the first token after the prompt) for a [B, 1, D] token."""
        hidden = embeds
        bounds = [s.first_layer for s in segments[1:]] + [len(self.layers)]
        for k, (seg, stop) in enumerate(zip(segments, bounds)):
            rope = tables.cos[:, k, step:step + 1], tables.sin[:, k, step:step + 1]
            mask = tables.masks[k]
            if mask is not None:  # keys: the segment's prompt, the tokens decoded so far, this one
                mask = mask[..., :tables.prompt_lengths[k] + step + 1]
            hidden = self._run_layers(hidden, mask, rope, cache, seg.first_layer, stop)
        return self.norm(hidden)


@dataclass
class DecodeTables:
    """Per segment and decode step: RoPE cos / sin [B, S, steps, d]; per segment the additive key mask over prompt
    + steps (None without padding) and the prompt length (the mask is cut to the keys a step sees)."""

    cos: torch.Tensor
    sin: torch.Tensor
    masks: list[torch.Tensor | None]
    prompt_lengths: list[int]


def apply_reductions(batch: SequenceBatch, reductions, compact_positions: bool) -> SequenceBatch:
    """Rebuild every row as prefix + reduced visual segment + suffix, re-padded on the right.

    `reductions` is one Reduction per sample (None = unchanged), or one batched Reduction covering every row
    (rows then share the visual span, so the whole batch is rebuilt with a few tensor ops).
    """
    if isinstance(reductions, Reduction):
        if len(set(batch.visual_start.tolist())) == 1 and len(set(batch.visual_len.tolist())) == 1:
            return _apply_batched(batch, reductions, compact_positions)
        reductions = reductions.split()
    rows, pos_rows, origins, new_len = [], [], [], []
    for b, red in enumerate(reductions):
        n_real = int(batch.lengths[b])
        start, n_vis = int(batch.visual_start[b]), int(batch.visual_len[b])
        hidden, pos, origin = batch.hidden[b, :n_real], batch.positions[b, :n_real], batch.origin[b]
        if red is not None and n_vis > 0:
            end = start + n_vis
            rest = end + red.drop_after
            hidden = torch.cat([hidden[:start], red.gather(hidden[start:end]), hidden[rest:]])
            pos = torch.cat([pos[:start], red.gather_index(pos[start:end]), pos[rest:]])
            origin = red.gather_index(origin)
            n_vis = red.size
        if compact_positions:
            pos = torch.arange(hidden.shape[0], device=hidden.device)
        rows.append(hidden)
        pos_rows.append(pos)
        origins.append(origin)
        new_len.append(n_vis)
    key_mask = pad_rows([torch.ones(r.shape[0], dtype=torch.bool, device=r.device) for r in rows], False)
    return replace(batch, hidden=pad_rows(rows), key_mask=key_mask, positions=pad_rows(pos_rows),
                   visual_len=torch.tensor(new_len), origin=origins, layer_input=None,
                   lengths=torch.tensor([r.shape[0] for r in rows]))


def _apply_batched(batch: SequenceBatch, red: Reduction, compact_positions: bool) -> SequenceBatch:
    """The batched rebuild: every row has its visual segment at the same [start, start + n)."""
    start, n_vis = int(batch.visual_start[0]), int(batch.visual_len[0])
    end, size = start + n_vis, red.size

    def splice(x: torch.Tensor, middle: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :start], middle, x[:, end:]], dim=1)

    hidden = splice(batch.hidden, red.gather(batch.hidden[:, start:end]))
    key_mask = splice(batch.key_mask, batch.key_mask.new_ones(batch.key_mask.shape[0], size))
    if compact_positions:
        positions = torch.arange(hidden.shape[1], device=hidden.device).expand(hidden.shape[0], -1)
    else:
        positions = splice(batch.positions, red.gather_index(batch.positions[:, start:end]))
    origin = list(red.gather_index(torch.stack(batch.origin)).unbind(0))
    return replace(batch, hidden=hidden, key_mask=key_mask, positions=positions, origin=origin, layer_input=None,
                   visual_len=torch.full_like(batch.visual_len, size), lengths=batch.lengths - (n_vis - size))


class LlavaLlamaForCausalLM(LlavaMultimodalMixin, nn.Module):
    """LLaVA-1.5 / NeXT model: `model` (decoder + multimodal modules, a `model_class`) and an untied `lm_head`."""

    model_class = LlavaLlamaModel

    def __init__(self, config: LlavaConfig):
        super().__init__()
        self.config = config
        self.model = self.model_class(config)
        self.lm_head = nn.Linear(self.model.config.hidden_size, self.model.config.vocab_size, bias=False)
        self.last_stats: ForwardStats | None = None
        self.decode_graphs = DecodeGraphs(self)
        self._placement: tuple[int, bool] | None = None

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, images=None, image_sizes=None, attention_mask=None) -> torch.Tensor:
        """Prefill without a cache; returns logits [B, T', V] over the (possibly pruned) sequence."""
        batch = self.prepare_multimodal_batch(input_ids, attention_mask, images, image_sizes)
        final, _, _, self.last_stats = self.model.prefill(batch, cache=None)
        return self.lm_head(final)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        images=None,
        image_sizes=None,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 128,
        min_new_tokens: int = 0,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int = 0,
        return_logits: bool = False,
        use_cache: bool | None = None,
        cuda_graph: bool | None = None,
    ):
        """Prefill once, then decode with the KV cache (or, with `use_cache=False`, re-run the whole pruned
        prefill over prompt + generated tokens at every step; None = the reducer's `cached_decode`).
        `cuda_graph`: the fast path, cached decode steps over a static KV cache replayed from a CUDA graph
        (llava.model.graph_decode; same results up to summation order); None (default) = on where it applies
        (`fast_path_applies`: fp16 / bf16 on one GPU, sdpa or eager attention), False = the eager decode.
        Returns the new token ids [B, n] (padded with `pad_token_id` after EOS), with `return_logits` also the
        per-step logits [B, n, V]."""
        eos = self.config.eos_token_id if eos_token_id is None else eos_token_id
        if use_cache is None:
            use_cache = getattr(self.model.reducer, "cached_decode", True)
        if cuda_graph is None:
            cuda_graph = self.fast_path_applies()
        with self.vision_graphs(cuda_graph):
            batch = self.prepare_multimodal_batch(input_ids, attention_mask, images, image_sizes)
        cache = self.new_cache(max_new_tokens - 1, cuda_graph) if use_cache and max_new_tokens > 1 else None
        graphs = self.decode_graphs if cuda_graph and use_cache else None
        final, last_index, segments, self.last_stats = self.model.prefill(batch, cache, graphs)
        rows = torch.arange(final.shape[0], device=final.device)
        logits = self.lm_head(final[rows, last_index]).float()
        decode = self.decoder(cache, segments, max_new_tokens - 1) if use_cache and max_new_tokens > 1 else None
        done = torch.zeros(final.shape[0], dtype=torch.bool, device=final.device)
        tokens, step_logits = [], []
        for step in range(max_new_tokens):
            if step < min_new_tokens and eos is not None:
                logits[:, eos] = float("-inf")
            step_logits.append(logits)
            token = _pick(logits, do_sample, temperature, top_p)
            token = token.masked_fill(done, pad_token_id)
            tokens.append(token)
            done |= token == eos if eos is not None else torch.zeros_like(done)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            if use_cache:
                logits = decode(token)
            else:
                batch = batch.append(self.model.embed_tokens(token)[:, None])
                final, last_index, _, self.last_stats = self.model.prefill(batch, None)
                logits = self.lm_head(final[rows, last_index]).float()
        out = torch.stack(tokens, dim=1)
        return (out, torch.stack(step_logits, dim=1)) if return_logits else out

    def fast_path_applies(self) -> bool:
        """Whether `generate(cuda_graph=None)` takes the CUDA-graph path: the whole model on one GPU in fp16 /
        bf16 with sdpa or eager attention (fp32 and CPU runs stay eager)."""
        return (self.device.type == "cuda" and self.dtype in (torch.float16, torch.bfloat16)
                and self.model.attn_implementation in ("sdpa", "eager") and self.on_one_device())

    def on_one_device(self) -> bool:
        """Whether every parameter is on one device (walked again only after the weights changed)."""
        version = weights_version()
        if self._placement is None or self._placement[0] != version:
            self._placement = version, len({p.device for p in self.parameters()}) == 1
        return self._placement[1]

    def vision_graphs(self, enabled: bool) -> AbstractContextManager:
        """While open, the vision tower replays its layers from CUDA graphs where they apply (`enabled`)."""
        tower = self.model.vision_tower
        return nullcontext() if tower is None else tower.graphed(enabled)

    def _apply(self, fn, *args, **kwargs):
        """`.to()` / `.half()` / `.cuda()` move the weights: graphs captured before are stale."""
        out = super()._apply(fn, *args, **kwargs)
        weights_changed()
        return out

    def new_cache(self, new_tokens: int, cuda_graph: bool = False) -> DynamicCache | StaticKV:
        """The KV cache of a prefill followed by `new_tokens` decode steps (static buffers for CUDA graphs)."""
        return self.decode_graphs.new_cache(new_tokens) if cuda_graph else DynamicCache()

    def decoder(self, cache: DynamicCache | StaticKV, segments: list[Segment], new_tokens: int) -> Callable:
        """After a prefill that filled `cache`: a function token [B] -> next-token logits [B, V] (fp32), called
        once per decode step, at most `new_tokens` times (a graph replay for a static cache, else the eager
        `decode_step`)."""
        if isinstance(cache, StaticKV):
            return self.decode_graphs.stepper(cache, segments)

        tables = self.model.decode_tables(segments, new_tokens, self.lm_head.weight)
        steps = iter(range(new_tokens))

        def step(token: torch.Tensor) -> torch.Tensor:
            with sdpa_kernel(DECODE_ATTENTION):
                hidden = self.model.decode_step(self.model.embed_tokens(token)[:, None], cache, segments, tables,
                                                next(steps))
            return self.lm_head(hidden[:, -1]).float()

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


__all__ = ["LlavaConfig", "LlavaLlamaModel", "LlavaLlamaForCausalLM", "ForwardStats", "pad_rows"]
