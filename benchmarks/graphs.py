"""The decoder layers of a prefill captured in one CUDA graph per stage schedule, next to the same layers run
eagerly (docs/efficiency.md, 'Protocol'). Layers only: ViT, selection, splicing and lm_head are not included, and each
stage runs on static random hidden states of its measured length (shapes decide the time, not values)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from benchmarks.runner import summary
from visiondrop.graphs import capture


def layer_segments(counts: list[int]) -> list[tuple[int, int, int]]:
    """Runs of equal per-layer visual counts as (first layer, stop layer, count)."""
    out: list[tuple[int, int, int]] = []
    for layer, n in enumerate(counts):
        if out and out[-1][2] == n:
            out[-1] = (out[-1][0], layer + 1, n)
        else:
            out.append((layer, layer + 1, n))
    return out


def stage_forward(model, counts: list[int], text_tokens: int, batch: int = 1) -> Callable[[], list[torch.Tensor]]:
    """A closure running every stage's layers over static inputs of length text + n_stage (no mask: causal)."""
    lm = model.model
    stages = []
    g = torch.Generator(device=model.device).manual_seed(0)
    for first, stop, n in layer_segments(counts):
        length = text_tokens + n
        hidden = torch.randn(batch, length, model.config.hidden_size, generator=g, device=model.device,
                             dtype=model.dtype)
        positions = torch.arange(length, device=model.device)[None].expand(batch, -1)
        stages.append((lm.layers[first:stop], hidden, lm.rotary_emb(hidden, positions)))

    def forward() -> list[torch.Tensor]:
        outputs = []
        for layers, hidden, rope in stages:
            for layer in layers:
                hidden = layer(hidden, attention_mask=None, position_embeddings=rope)
            outputs.append(hidden)
        return outputs

    return forward


def _time_ms(fn: Callable, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


@torch.no_grad()
def graph_prefill(model, counts: list[int], text_tokens: int, warmup: int, repeats: int, batch: int = 1) -> dict:
    """Median / p10 / p90 ms of the prefill layers, eager and replayed from a CUDA graph, and their ratio."""
    forward = stage_forward(model, counts, text_tokens, batch)
    eager = _time_ms(forward, warmup, repeats)
    graph, _ = capture(forward, warmup=3)
    replay = _time_ms(graph.replay, warmup, repeats)
    del graph
    e, r = summary(eager), summary(replay)
    return {"batch": batch, "eager_layers_ms": e, "graph_layers_ms": r, "graph_speedup": e["median"] / r["median"]}
