"""CUDA graphs for shape-static work: a pruning stage launches ~50 small kernels, a batch-1 prefill segment or
ViT a few hundred, which on a small batch cost more host time than GPU time; replaying them as one captured graph
removes that overhead. Same kernels, same numbers.

A graph reads the weights at the addresses they had when it was captured: in-place changes (`load_state_dict`,
`copy_`) are seen by every replay, but a parameter, buffer or module replaced, or a model moved / cast with
`.to()` (`LlavaLlamaForCausalLM` reports its own), would replay stale work. `weights_version()` counts such
events process-wide (module hooks on every parameter and buffer registration: a replacement module registered
its parameters when it was built) and every cache here drops its graphs when it changes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch
from torch.nn.modules import module as _module

_VERSION = [0]


def weights_changed(*_args) -> None:
    """Record that some module's parameters or buffers were replaced (graphs captured before are stale); also
    the registration hook itself, so it returns None (the object is kept as registered)."""
    _VERSION[0] += 1


_module.register_module_parameter_registration_hook(weights_changed)
_module.register_module_buffer_registration_hook(weights_changed)


def weights_version() -> int:
    """A counter that changes whenever a captured graph may read replaced weights (see the module docstring)."""
    return _VERSION[0]


def capture(fn: Callable[[], object], warmup: int = 2, pool=None) -> tuple[torch.cuda.CUDAGraph, object]:
    """Run `fn` `warmup` times on a side stream (compiles kernels, fills caches), then capture it (into the
    memory `pool` of other graphs when given); returns the graph and the outputs of the captured call (tensors
    in the graph's memory, rewritten by every replay)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        outputs = fn()
    return graph, outputs


class GraphCache:
    """Replays `fn(*inputs) -> tuple of tensors` from a graph captured per `key` (the key must fix everything
    the graph depends on besides the inputs' values and the weights: shapes, dtypes, static arguments).
    Inputs are copied into the graph's buffers and outputs cloned, so callers see ordinary tensors. A key runs
    eagerly for its first `min_uses - 1` calls (one-off shapes cost no capture), the `capacity` most recently
    used graphs are kept, and all are dropped when `weights_version()` changes. `shared_pool`: the graphs
    share one memory pool (safe because outputs are cloned right after each replay)."""

    def __init__(self, capacity: int = 12, min_uses: int = 1, shared_pool: bool = False):
        self.capacity, self.min_uses, self.shared_pool = capacity, min_uses, shared_pool
        self.entries: OrderedDict[Hashable, tuple] = OrderedDict()
        self.uses: OrderedDict[Hashable, int] = OrderedDict()
        self.version = weights_version()
        self.pool = None

    def run(self, key: Hashable, fn: Callable[..., tuple[torch.Tensor, ...]], *inputs: torch.Tensor):
        with torch.cuda.device(inputs[0].device):  # the inputs' GPU, also when a model spans several
            return self._run(key, fn, inputs)

    def _run(self, key, fn, inputs):
        if self.version != weights_version():
            self.clear()
        entry = self.entries.get(key)
        if entry is None:
            uses = self.uses[key] = self.uses.pop(key, 0) + 1
            while len(self.uses) > 4 * self.capacity:
                self.uses.popitem(last=False)
            if uses < self.min_uses:
                return tuple(fn(*inputs))
            if self.shared_pool and self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            static = [x.clone() for x in inputs]
            graph, outputs = capture(lambda: fn(*static), pool=self.pool)
            entry = self.entries[key] = (graph, static, outputs)
            while len(self.entries) > self.capacity:
                self.entries.popitem(last=False)
        self.entries.move_to_end(key)
        graph, static, outputs = entry
        torch._foreach_copy_(static, inputs)  # one launch for every input
        graph.replay()
        return tuple(out.clone() for out in outputs)

    def drop(self, keep: Callable[[Hashable], bool]) -> None:
        """Forget the graphs whose key fails `keep` (their use counts stay)."""
        for key in [k for k in self.entries if not keep(k)]:
            del self.entries[key]

    def clear(self) -> None:
        """Forget every graph and use count (the shared pool's memory goes back once no graph uses it)."""
        self.entries.clear()
        self.uses.clear()
        self.pool = None
        self.version = weights_version()
