"""LLaVA on a LLaMA/Vicuna decoder: config, a decoder loop with stage boundaries, and `generate`
(llava.model.decoding runs it).

The decoder loop is our own (transformers' LlamaDecoderLayer, RMSNorm and rotary embedding are used as
modules, never edited). A run is a prefill over the spliced prompt followed by cached decode steps. Layers
are grouped into *segments*: a segment starts at layer 0 and at every stage boundary where a method
changed the sequence; all layers of a segment see the same tokens, mask and positions. During decode each
segment keeps its own key mask and next position, so a pruned layer group attends to its shorter cache and
a new token takes, in each group, the position after the group's last real position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from transformers import AutoConfig, LlamaConfig
from transformers.cache_utils import DynamicCache
from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    rotate_half,
)

from llava.model import decoding
from llava.model.compat import LAYER_CACHE_KWARG
from llava.model.graph_decode import DecodeGraphs, StaticKV
from llava.model.llava_arch import LlavaMetaModel, LlavaMultimodalMixin
from llava.model.sequence import SequenceBatch, attention_bias, pad_rows
from visiondrop.execution import Execution
from visiondrop.graphs import weights_changed
from visiondrop.methods.base import Method
from visiondrop.reduction import Reduction, Reductions
from visiondrop.timing import SectionTimer, timed_reduce


class LlavaConfig(LlamaConfig):
    """LLaMA config plus the LLaVA `mm_*` fields (kept as plain attributes)."""

    model_type = "llava_llama"


AutoConfig.register("llava_llama", LlavaConfig)


class LlamaLayerView:
    """A LlamaDecoderLayer as pruning methods read it (visiondrop.layers.DecoderLayerView): input RMSNorm, q / k
    projections, rotate-half RoPE; `fused`: the Triton RMSNorm / RoPE kernels (fp16 CUDA)."""

    def __init__(self, layer: LlamaDecoderLayer):
        self.layer = layer
        self.index = layer.self_attn.layer_idx
        self.head_dim = layer.self_attn.head_dim

    def normed(self, hidden: torch.Tensor, fused: bool = False) -> torch.Tensor:
        norm = self.layer.input_layernorm
        if fused:
            from visiondrop import kernels

            return kernels.rms_norm(hidden, norm.weight, norm.variance_epsilon)
        return norm(hidden)

    def queries(self, normed: torch.Tensor) -> torch.Tensor:
        return self.layer.self_attn.q_proj(normed).unflatten(-1, (-1, self.head_dim))

    def keys(self, normed: torch.Tensor) -> torch.Tensor:
        return self.layer.self_attn.k_proj(normed).unflatten(-1, (-1, self.head_dim))

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, fused: bool = False) -> torch.Tensor:
        if fused:
            from visiondrop import kernels

            return kernels.rope(x, cos, sin)
        return x * cos[..., None, :] + rotate_half(x) * sin[..., None, :]


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
        self.method: Method | None = None  # the in-LLM pruning method (None: no boundaries)
        self.reduce_stage: Callable | None = None  # called instead of method.reduce when set (timing, replay)
        self.execution = Execution()

    def install_method(self, method: Method, execution: Execution, source: str = "") -> None:
        """Run `method`'s LLM stages (none when it has no boundaries) through `execution`; `source` names the
        config in the error for a boundary past the last layer."""
        n_layers = len(self.layers)
        if method.boundaries and max(method.boundaries) >= n_layers:
            raise ValueError(f"{source or 'config'}: pruning after layer {max(method.boundaries)} but the "
                             f"model has {n_layers} layers")
        self.method = method if method.boundaries else None
        self.execution = execution

    def time_stages(self, timer: SectionTimer | None) -> None:
        """Time every stage of the installed method as "select_llm" into `timer` (None: untimed)."""
        self.reduce_stage = None if timer is None or self.method is None else timed_reduce(self.method.reduce, timer)

    def layer_view(self, index: int) -> LlamaLayerView:
        """Decoder layer `index` as pruning methods read it."""
        return LlamaLayerView(self.layers[index])

    @property
    def attn_implementation(self) -> str:
        return self.config._attn_implementation or "sdpa"

    def mask_and_rope(self, hidden, key_mask, padded: bool, positions) -> tuple:
        """The attention mask and RoPE (cos, sin) shared by every layer of a segment."""
        mask = attention_bias(key_mask, padded, hidden.shape[1], hidden.dtype, self.attn_implementation)
        return mask, self.rotary_emb(hidden, positions)

    def run_layers(self, hidden, mask, rope, cache, first: int, stop: int) -> torch.Tensor:
        for layer in self.layers[first:stop]:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rope, use_cache=cache is not None,
                           **{LAYER_CACHE_KWARG: cache})
        return hidden

    def prefill(self, batch: SequenceBatch, cache: DynamicCache | StaticKV | None,
                graphs: DecodeGraphs | None = None) -> tuple:
        """Run all layers over the prompt; the pruning method acts at its boundaries. Returns the final hidden
        states (after the norm), each row's last real index, the segments for decoding, and the accounting.
        With `graphs` (and a static or no cache) the layer segments replay from CUDA graphs where they apply."""
        if graphs is not None and isinstance(cache, DynamicCache):
            raise ValueError("graph-replayed prefill segments need a static KV cache (or none)")

        def run_layers(hidden, mask, rope, first, stop):
            if graphs is None:
                return self.run_layers(hidden, mask, rope, cache, first, stop)
            return graphs.prefill_layers(cache, hidden, mask, rope, first, stop)

        n_layers = len(self.layers)
        method = self.method
        boundaries = sorted(method.boundaries) if method is not None else []
        if boundaries and boundaries[-1] >= n_layers:
            raise ValueError(f"pruning boundary after layer {boundaries[-1]} but the model has {n_layers} layers")
        offset = method.score_layer_offset if boundaries else 0
        if offset not in (0, -1):
            raise ValueError(f"score_layer_offset={offset}: only 0 (next layer) or -1 (previous layer) are supported")
        state = method.begin_prefill(batch) if boundaries else None
        reduce = (self.reduce_stage or method.reduce) if boundaries else None
        counts = torch.zeros(n_layers, batch.hidden.shape[0], dtype=torch.long)
        stage_origins = [batch.origin]
        segments = []
        starts = [0, *boundaries]
        rope = None
        for stage, (first, stop) in enumerate(zip(starts, [*boundaries, n_layers])):
            if stage > 0:  # positions are still those of the segment that just ran: its RoPE scores this stage
                reductions = reduce(stage, batch, self.layer_view(first + offset), rope, state, self.execution)
                batch = apply_reductions(batch, reductions, method.compact_positions)
                stage_origins.append(batch.origin)
            counts[first:stop] = batch.visual_len
            padded = batch.has_padding
            mask, rope = self.mask_and_rope(batch.hidden, batch.key_mask, padded, batch.positions)
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


def apply_reductions(batch: SequenceBatch, reductions: Reductions, compact_positions: bool) -> SequenceBatch:
    """Rebuild every row as prefix + reduced visual segment + suffix, re-padded on the right (with a shared
    batched reduction and one shared visual span, the whole batch is rebuilt with a few tensor ops).

    Positions are [B, T] or [A, B, T] (one row per rotary axis, Qwen2.5-VL's M-RoPE): survivors keep theirs on
    every axis, or with `compact_positions` every token takes its new index on every axis (docs/qwen.md)."""
    shared = reductions.shared
    if shared is not None and len(set(batch.visual_start.tolist())) == 1 and len(set(batch.visual_len.tolist())) == 1:
        return _apply_batched(batch, shared, compact_positions)
    rows, pos_rows, origins, new_len = [], [], [], []
    for b, red in enumerate(reductions.per_row()):
        n_real = int(batch.lengths[b])
        start, n_vis = int(batch.visual_start[b]), int(batch.visual_len[b])
        hidden, pos, origin = batch.hidden[b, :n_real], batch.positions[..., b, :n_real], batch.origin[b]
        if red is not None and n_vis > 0:
            end = start + n_vis
            rest = end + red.drop_after
            hidden = torch.cat([hidden[:start], red.gather(hidden[start:end]), hidden[rest:]])
            pos = torch.cat([pos[..., :start], red.gather_index(pos[..., start:end]), pos[..., rest:]], dim=-1)
            origin = red.gather_index(origin)
            n_vis = red.size
        if compact_positions:
            pos = torch.arange(hidden.shape[0], device=hidden.device).expand(*pos.shape[:-1], -1)
        rows.append(hidden)
        pos_rows.append(pos.movedim(-1, 0))
        origins.append(origin)
        new_len.append(n_vis)
    key_mask = pad_rows([torch.ones(r.shape[0], dtype=torch.bool, device=r.device) for r in rows], False)
    positions = pad_rows(pos_rows)
    if positions.dim() == 3:  # [B, T, A] -> [A, B, T]
        positions = positions.permute(2, 0, 1)
    return replace(batch, hidden=pad_rows(rows), key_mask=key_mask, positions=positions,
                   visual_len=torch.tensor(new_len), origin=origins, layer_input=None,
                   lengths=torch.tensor([r.shape[0] for r in rows]))


def _apply_batched(batch: SequenceBatch, red: Reduction, compact_positions: bool) -> SequenceBatch:
    """The batched rebuild: every row has its visual segment at the same [start, start + n)."""
    start, n_vis = int(batch.visual_start[0]), int(batch.visual_len[0])
    end, size = start + n_vis, red.size

    def splice(x: torch.Tensor, middle: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """x's [start, end) along `dim` (the token axis: 1 of hidden states, last of masks and positions)
        replaced by `middle`."""
        before, after = x.narrow(dim, 0, start), x.narrow(dim, end, x.shape[dim] - end)
        return torch.cat([before, middle, after], dim=dim)

    hidden = splice(batch.hidden, red.gather(batch.hidden[:, start:end]), dim=1)
    key_mask = splice(batch.key_mask, batch.key_mask.new_ones(batch.key_mask.shape[0], size))
    if compact_positions:
        positions = torch.arange(hidden.shape[1], device=hidden.device).expand(*batch.positions.shape[:-1], -1)
    else:
        positions = splice(batch.positions, red.gather_index(batch.positions[..., start:end]))
    origin = list(red.gather_index(torch.stack(batch.origin)).unbind(0))
    return replace(batch, hidden=hidden, key_mask=key_mask, positions=positions, origin=origin, layer_input=None,
                   visual_len=torch.full_like(batch.visual_len, size), lengths=batch.lengths - (n_vis - size))


class LlavaLlamaForCausalLM(LlavaMultimodalMixin, nn.Module):
    """LLaVA-1.5 / NeXT model: `model` (decoder + multimodal modules, a `model_class`) and an untied `lm_head`."""

    model_class = LlavaLlamaModel
    unpruned_model = "llava-v1.5-7b"  # the model name of the unpruned config installed when none is given
    supports_fast_path = True  # the family runs the CUDA-graph path (decoding.fast_path_applies)

    def __init__(self, config: LlavaConfig):
        super().__init__()
        self.config = config
        self.model = self.model_class(config)
        self.lm_head = nn.Linear(self.model.config.hidden_size, self.model.config.vocab_size, bias=False)
        self.last_stats: ForwardStats | None = None
        self.decode_graphs = DecodeGraphs(self)

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
        prefill over prompt + generated tokens at every step; None = the method's `cached_decode`).
        `cuda_graph`: the fast path, cached decode steps over a static KV cache replayed from a CUDA graph
        (llava.model.graph_decode; same results up to summation order); None (default) = on where it applies
        (`decoding.fast_path_applies`: fp16 / bf16 on one GPU, sdpa or eager attention), False = the eager decode;
        a family without the path (`supports_fast_path` False: Qwen2.5-VL) runs eager whatever is asked.
        Returns the new token ids [B, n] (padded with `pad_token_id` after EOS), with `return_logits` also the
        per-step logits [B, n, V]."""
        return decoding.generate(self, input_ids, images, image_sizes, attention_mask, max_new_tokens,
                                 min_new_tokens, do_sample, temperature, top_p, eos_token_id, pad_token_id,
                                 return_logits, use_cache, cuda_graph)

    def _apply(self, fn, *args, **kwargs):
        """`.to()` / `.half()` / `.cuda()` move the weights: graphs captured before are stale."""
        out = super()._apply(fn, *args, **kwargs)
        weights_changed()
        return out


__all__ = ["LlavaConfig", "LlavaLlamaModel", "LlavaLlamaForCausalLM", "ForwardStats", "pad_rows"]
