"""CUDA graphs for shape-static work: a pruning stage launches ~50 small kernels, which on a small batch cost
more host time than GPU time; replaying them as one captured graph removes that overhead. Same kernels, same
numbers."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch


def capture(fn: Callable[[], object], warmup: int = 2) -> tuple[torch.cuda.CUDAGraph, object]:
    """Run `fn` `warmup` times on a side stream (compiles kernels, fills caches), then capture it; returns the
    graph and the outputs of the captured call (tensors in the graph's memory, rewritten by every replay)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()
    return graph, outputs


class GraphCache:
    """Replays `fn(*inputs) -> tuple of tensors` from a graph captured on its first call per `key` (the key
    must fix everything the graph depends on besides the inputs' values: shapes, dtypes, static arguments).
    Inputs are copied into the graph's buffers and outputs cloned, so callers see ordinary tensors. The
    `capacity` most recently used graphs are kept."""

    def __init__(self, capacity: int = 12):
        self.capacity = capacity
        self.entries: OrderedDict[Hashable, tuple] = OrderedDict()

    def run(self, key: Hashable, fn: Callable[..., tuple[torch.Tensor, ...]], *inputs: torch.Tensor):
        with torch.cuda.device(inputs[0].device):  # the inputs' GPU, also when a model spans several
            return self._run(key, fn, inputs)

    def _run(self, key, fn, inputs):
        entry = self.entries.get(key)
        if entry is None:
            static = [x.clone() for x in inputs]
            graph, outputs = capture(lambda: fn(*static))
            entry = self.entries[key] = (graph, static, outputs)
            while len(self.entries) > self.capacity:
                self.entries.popitem(last=False)
        self.entries.move_to_end(key)
        graph, static, outputs = entry
        torch._foreach_copy_(static, inputs)  # one launch for every input
        graph.replay()
        return tuple(out.clone() for out in outputs)
