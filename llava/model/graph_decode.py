"""Decode steps over a static KV cache, replayed from a CUDA graph (docs/efficiency.md, 'Protocol': graph mode).

An eager decode step launches ~15 kernels per decoder layer from Python: for a 7B model about 25 ms of host time
per token against a few ms of GPU work, at any batch an evaluation uses. Here the prefill runs as usual (eager,
pruning included) but writes each layer's keys and values into a preallocated buffer with room for the tokens to
come; every decode step is then one replay of a graph captured for the shapes (batch, each layer's buffer length,
the segments' first layers). A step writes the new token's key and value at its slot and masks the slots not
written yet (and the padding), so it attends to the keys the eager step sees: same results up to floating-point
summation order. Buffer lengths are rounded up to `bucket` tokens, so prompts of nearby lengths share buffers and
graphs. On a CPU the same static step runs without capture (how the tests check it).

The prefill's layer segments (between two pruning boundaries) are graph-replayed too when batch x tokens fits
`prefill_max_tokens` (batch 1 and small batches, where the eager prefill is host-bound): a graph per (segment,
exact shape, KV buffers), captured on the second prefill of that shape (one-off prompt lengths stay eager), all
in one shared memory pool. Everything is dropped when the weights are replaced (`visiondrop.graphs`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from llava.model.fused_decode import decode_layer, final_norm, fused_applies
from visiondrop.graphs import GraphCache, capture, weights_version


class StaticKV:
    """The `past_key_values` the decoder layers see. In the prefill each layer's keys / values are copied into
    buffers from `DecodeGraphs` (and returned unchanged, so the prefill is the eager one); once a layer has a
    decode slot (`slots[layer]`, a device index) an update writes the token there and returns the whole buffers."""

    def __init__(self, owner: DecodeGraphs, new_tokens: int):
        self.owner, self.new_tokens = owner, new_tokens
        self.buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.slots: dict[int, torch.Tensor] = {}


    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        if layer_idx in self.slots:
            keys, values = self.buffers[layer_idx]
            keys.index_copy_(2, self.slots[layer_idx], key)
            values.index_copy_(2, self.slots[layer_idx], value)
            return keys, values
        n = key.shape[2]
        keys, values = self.owner.buffers(layer_idx, key, n + self.new_tokens)
        keys[:, :, :n], values[:, :, :n] = key, value
        self.buffers[layer_idx] = keys, values
        return key, value

    @property
    def signature(self) -> tuple:
        return tuple(self.owner.buffer_key(layer, k, k.shape[2]) for layer, (k, _) in sorted(self.buffers.items()))


@dataclass
class _SegmentInputs:
    """Static inputs of one segment: prefill length, key mask over the whole buffer, next position."""

    first: int
    stop: int
    length: torch.Tensor
    key_mask: torch.Tensor
    position: torch.Tensor


class DecodeStep:
    """token [B] -> next-token logits [B, V] (fp32) for one generation; call it once per decode step. `fused`:
    the layers run as fused kernels around the projections (llava.model.fused_decode; None = when replayed,
    where they apply)."""

    def __init__(self, model, cache: StaticKV, segments: list, replay: bool, fused: bool | None = None):
        self.model, self.cache, self.replay = model, cache, replay
        batch = segments[0].key_mask.shape[0]
        device = segments[0].key_mask.device
        self.token = torch.zeros(batch, dtype=torch.long, device=device)
        self.step = torch.zeros(1, dtype=torch.long, device=device)
        stops = [s.first_layer for s in segments[1:]] + [len(model.model.layers)]
        self.segments = []
        for seg, stop in zip(segments, stops):
            capacity = cache.buffers[seg.first_layer][0].shape[2]
            self.segments.append(_SegmentInputs(
                seg.first_layer, stop, torch.zeros(1, dtype=torch.long, device=device),
                torch.zeros(batch, capacity, dtype=torch.bool, device=device),
                torch.zeros(batch, dtype=torch.long, device=device)))
        self.graph, self.logits = None, None
        embeds = model.model.embed_tokens.weight
        self.fused = (fused if fused is not None else replay) and all(
            fused_applies(embeds, layer) for layer in model.model.layers)

    def load(self, cache: StaticKV, segments: list) -> DecodeStep:
        """Take a new prefill's state (same shapes): prompt key masks, lengths, next positions; step 0."""
        self.cache = cache
        for inputs, seg in zip(self.segments, segments):
            n = seg.key_mask.shape[1]
            inputs.key_mask.zero_()
            inputs.key_mask[:, :n] = seg.key_mask
            inputs.length.fill_(n)
            inputs.position.copy_(seg.next_position)
        self.step.zero_()
        return self

    def forward(self) -> torch.Tensor:
        """The captured work: embed, every segment's layers at its slot and position, norm, lm_head."""
        lm = self.model.model
        hidden, residual = lm.embed_tokens(self.token)[:, None], None
        for seg in self.segments:
            slot = seg.length + self.step
            seg.key_mask.index_fill_(1, slot, True)
            positions = (seg.position + self.step)[:, None]
            if self.fused:  # the key mask and the slot go to the attention kernel as they are
                rope = lm.rotary_emb(hidden, positions)
                for index in range(seg.first, seg.stop):
                    hidden, residual = decode_layer(lm.layers[index], hidden, residual, rope,
                                                    self.cache.buffers[index], seg.key_mask, slot)
                continue
            for layer in range(seg.first, seg.stop):
                self.cache.slots[layer] = slot
            mask, rope = lm.mask_and_rope(hidden, seg.key_mask, True, positions)
            hidden = lm.run_layers(hidden, mask, rope, self.cache, seg.first, seg.stop)
        normed = final_norm(lm.norm, hidden, residual) if self.fused else lm.norm(hidden)
        return self.model.lm_head(normed[:, -1]).float()

    def __call__(self, token: torch.Tensor) -> torch.Tensor:
        self.token.copy_(token)
        if not self.replay:
            logits = self.forward()
        else:
            with torch.cuda.device(self.token.device):
                if self.graph is None:
                    self.graph, self.logits = capture(self.forward)
                self.graph.replay()
            logits = self.logits.clone()
        self.step += 1
        return logits


class DecodeGraphs:
    """KV buffers, captured prefill segments and decode steps of one model, reused by later generations of the
    same shapes; the `capacity` most recently used step graphs (and only their buffers) are kept."""

    def __init__(self, model, bucket: int = 64, capacity: int = 2, prefill_max_tokens: int = 4096):
        self.model, self.bucket, self.capacity = model, bucket, capacity
        self.prefill_max_tokens = prefill_max_tokens
        self._buffers: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._steps: OrderedDict[tuple, DecodeStep] = OrderedDict()
        self.prefill = GraphCache(capacity=32, min_uses=2, shared_pool=True)
        self.version = weights_version()
        self._placement: tuple[int, bool] | None = None

    def on_one_device(self) -> bool:
        """Whether every parameter of the model is on one device (walked again only after the weights changed)."""
        version = weights_version()
        if self._placement is None or self._placement[0] != version:
            self._placement = version, len({p.device for p in self.model.parameters()}) == 1
        return self._placement[1]

    def buffer_key(self, layer: int, like: torch.Tensor, length: int) -> tuple:
        """Identity of `layer`'s buffers for keys shaped like `like` and `length` tokens (rounded up to `bucket`)."""
        length = -(-length // self.bucket) * self.bucket
        return layer, like.shape[0], like.shape[1], length, like.shape[3], like.dtype, like.device

    def buffers(self, layer: int, like: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeroed-once key and value buffers [B, H_kv, bucketed length, d] for `layer` (reused across calls)."""
        key = self.buffer_key(layer, like, length)
        if key not in self._buffers:
            shape = (*like.shape[:2], key[3], like.shape[3])
            self._buffers[key] = tuple(torch.zeros(shape, dtype=like.dtype, device=like.device) for _ in range(2))
        return self._buffers[key]

    def new_cache(self, new_tokens: int) -> StaticKV:
        """A cache for a prefill followed by `new_tokens` decode steps; buffers of evicted graphs are freed (and
        the prefill graphs writing them)."""
        if self.version != weights_version():
            self.clear()
        kept = {k for sig in self._steps for k in sig[0]}
        self._buffers = {k: v for k, v in self._buffers.items() if k in kept}
        self.prefill.drop(lambda key: set(key[-1]) <= kept)
        return StaticKV(self, new_tokens)

    def prefill_layers(self, cache: StaticKV | None, hidden: torch.Tensor, mask, rope: tuple, first: int,
                       stop: int) -> torch.Tensor:
        """Layers [first, stop) of a prefill over `hidden`, their keys / values written into `cache`'s buffers
        (None: not kept); replayed from a graph per shape when batch x tokens <= `prefill_max_tokens` on a GPU."""
        lm = self.model.model
        if not hidden.is_cuda or hidden.shape[:2].numel() > self.prefill_max_tokens:
            return lm.run_layers(hidden, mask, rope, cache, first, stop)
        keys, new_tokens = (), None
        if cache is not None:
            config = lm.config
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            like = hidden.new_empty(hidden.shape[0], config.num_key_value_heads, 0, head_dim)
            new_tokens = cache.new_tokens
            length = hidden.shape[1] + new_tokens
            keys = tuple(self.buffer_key(layer, like, length) for layer in range(first, stop))
            for layer in range(first, stop):  # allocated outside any capture (a graph only writes them)
                cache.buffers[layer] = self.buffers(layer, like, length)

        def run(h, cos, sin, *bias):
            writer = None if new_tokens is None else StaticKV(self, new_tokens)  # writes cache's buffers
            return (lm.run_layers(h, bias[0] if bias else None, (cos, sin), writer, first, stop),)

        key = (first, stop, tuple(hidden.shape), hidden.dtype, None if mask is None else tuple(mask.shape), keys)
        inputs = (hidden, *rope) if mask is None else (hidden, *rope, mask)
        return self.prefill.run(key, run, *inputs)[0]

    def stepper(self, cache: StaticKV, segments: list) -> DecodeStep:
        """The decode step for a prefill that filled `cache` (graph-replayed on CUDA, captured on first use)."""
        if self.model.model.attn_implementation == "flash_attention_2":
            raise ValueError("CUDA-graph decode needs sdpa or eager attention (flash_attention_2 unpads per step)")
        replay = segments[0].key_mask.is_cuda
        if replay and not self.on_one_device():
            raise ValueError("CUDA-graph decode needs the whole model on one GPU")
        signature = (cache.signature, tuple(s.first_layer for s in segments))
        step = self._steps.get(signature)
        if step is None:
            step = self._steps[signature] = DecodeStep(self.model, cache, segments, replay)
            while len(self._steps) > self.capacity:
                self._steps.popitem(last=False)
        self._steps.move_to_end(signature)
        return step.load(cache, segments)

    def clear(self) -> None:
        """Free every buffer and graph."""
        self._buffers.clear()
        self._steps.clear()
        self.prefill.clear()
        self.version = weights_version()
