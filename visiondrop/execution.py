"""How a method's stage work executes, shared by every method and stage (encoder and LLM): Triton kernels or the
torch reference path, CUDA-graph replay for small static-shape stages, the torch path's memory bound. None of these
changes a selection (scores are bit-equal or one fp16 step apart; docs/efficiency.md, 'Selection kernels')."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config validation reads ExecutionOptions without loading torch (fast --help)
    import torch


@dataclass
class ExecutionOptions:
    """The `execution:` section of a config."""

    kernels: str = "auto"  # triton | torch | auto (Triton on fp16 CUDA where the head width allows)
    graph_max_tokens: int = 4096  # stages over <= this many tokens (batch x prefix, crops x tower) replay CUDA graphs
    score_memory_mib: float = 128  # torch scoring path: attention maps are built in chunks that fit in this

    def __post_init__(self):
        if self.kernels not in ("auto", "triton", "torch"):
            raise ValueError(f"kernels={self.kernels!r}: expected 'auto', 'triton' or 'torch'")
        if self.graph_max_tokens < 0:
            raise ValueError("graph_max_tokens must be >= 0 (0 disables CUDA graphs)")
        if self.score_memory_mib <= 0:
            raise ValueError("score_memory_mib must be > 0")


class Execution:
    """One model's execution layer: the options and the CUDA graphs captured for its stages (keyed by the caller;
    dropped when the weights are replaced)."""

    def __init__(self, options: ExecutionOptions | None = None):
        from visiondrop.graphs import GraphCache

        self.options = options or ExecutionOptions()
        self.graphs = GraphCache()

    def fused(self, x: torch.Tensor, head_dim: int) -> bool:
        """Whether a stage over `x` runs the Triton kernels (`kernels`; auto: where `fused_applies`)."""
        kernels = self.options.kernels
        return kernels == "triton" or (kernels == "auto" and fused_applies(x, head_dim))

    def run(self, key: Hashable, fn: Callable[..., tuple[torch.Tensor, ...]], *inputs: torch.Tensor) -> tuple:
        """fn(*inputs), replayed from a CUDA graph per `key` when the first input is on a GPU and its first two dims
        hold at most `graph_max_tokens` tokens (the key must fix shapes and static arguments)."""
        first = inputs[0]
        if first.is_cuda and first.shape[:2].numel() <= self.options.graph_max_tokens:
            return self.graphs.run(key, fn, *inputs)
        return tuple(fn(*inputs))


def fused_applies(hidden: torch.Tensor, head_dim: int) -> bool:
    """Whether the Triton kernels (visiondrop.kernels, visiondrop.selection_kernels) can take over a stage over
    `hidden`: fp16 on CUDA, a power-of-two head_dim >= 16, Triton installed."""
    import torch

    fits = hidden.dtype == torch.float16 and head_dim >= 16 and not head_dim & (head_dim - 1)
    return hidden.is_cuda and fits and _triton_installed()


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None
