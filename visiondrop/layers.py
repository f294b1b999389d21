"""What a method may read of a model, supplied by the model family (llava.model): one decoder layer's input
norm, q / k projections and position embedding, and one vision-tower layer's attention. Methods see only these
views, so they run on any family that provides them (LLaMA + CLIP today; a new family writes its own views)."""

from __future__ import annotations

from typing import Protocol

import torch


class DecoderLayerView(Protocol):
    """One decoder layer as the LLM-stage scorers see it."""

    index: int  # the layer's index in the decoder (CUDA-graph keys, messages)
    head_dim: int

    def normed(self, hidden: torch.Tensor, fused: bool = False) -> torch.Tensor:
        """The layer's input norm of hidden states [..., T, D] (`fused`: the Triton kernel, fp16 CUDA)."""

    def queries(self, normed: torch.Tensor) -> torch.Tensor:
        """Queries [..., T, H, d] before the position embedding."""

    def keys(self, normed: torch.Tensor) -> torch.Tensor:
        """Keys [..., T, H_kv, d] before the position embedding."""

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, fused: bool = False) -> torch.Tensor:
        """The position embedding of x [..., T, H, d] with the rows' tables cos / sin [..., T, d]."""


class TowerLayerView(Protocol):
    """The vision-tower layer whose output the LLM receives (encoder-stage scorers). A tower with a CLS token
    (`has_cls`, CLIP) gives its CLS query's attention; one without (Qwen2.5-VL) the attention each token receives."""

    head_dim: int
    has_cls: bool

    def cls_attention(self, layer_input: torch.Tensor,
                      fp32_softmax: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """For the layer's input [n, T, C]: the CLS query's attention per head [n, H, T] and the keys
        [n, T, H, d] (`fp32_softmax=False`: the softmax in the input's dtype)."""

    def received_attention(self, layer_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Without CLS, for the n units of `layer_input`: the mean attention each of their T output tokens
        receives from all tokens of its unit [n, T] and those tokens' keys [n, T, H, d]."""
