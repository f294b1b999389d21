"""Encoder-output reduction shared by VisionDrop (stage s0) and VisionZip: CLS-attention dominant tokens
plus contextual tokens merged by key similarity, computed on the tower layer whose output the LLM receives."""

from __future__ import annotations

import torch

from visiondrop.layers import TowerLayerView
from visiondrop.merging import ascending_split, contextual_merge
from visiondrop.scoring import take_rows


def dominant_contextual(layer_input: torch.Tensor, features: torch.Tensor, layer: TowerLayerView, dominant: int,
                        contextual: int, fusion: str = "target_plus_mean", fused: bool = False,
                        fp32_softmax: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, 1+P, C] tower tokens -> [n, dominant + contextual, C] and each output token's origin [n, T'].

    Dominant set = CLS + the (dominant - 1) patches with the highest CLS attention (summed over heads), in
    ascending order; the rest merge into `contextual` tokens at stride targets by the similarity of their
    head-mean keys. Origin: CLS -1, patch j -> j. `fused`: selection and merging as the Triton kernels of
    `selection_kernels` (fp16 on CUDA; same results). `fp32_softmax=False`: the CLS softmax in the tower's dtype.
    """
    n_tokens = features.shape[1]
    if dominant < 1 or contextual < 0 or dominant + contextual > n_tokens:
        raise ValueError(f"dominant={dominant} + contextual={contextual} exceeds the {n_tokens} tower tokens")
    probs, keys = layer.cls_attention(layer_input, fp32_softmax)
    scores = probs.sum(dim=1)
    if fused:
        from visiondrop.selection_kernels import select_and_merge

        scores[:, 0] = float("inf")  # CLS: always the first dominant token
        dom, merged, targets = select_and_merge(scores.float()[:, None], features, keys, dominant, contextual,
                                                fusion, divisor=1)
        return torch.cat([take_rows(features, dom), merged], dim=1), torch.cat([dom, targets], dim=1) - 1
    cls = torch.zeros(features.shape[0], 1, dtype=torch.long, device=features.device)
    top = torch.topk(scores[:, 1:], dominant - 1, dim=-1, sorted=False).indices + 1  # every image at once
    dom, rest = ascending_split(n_tokens, torch.cat([cls, top], dim=1))  # CLS (index 0) comes first
    merged, targets = contextual_merge(features, keys.mean(dim=2), contextual, fusion, rest=rest)
    return torch.cat([take_rows(features, dom), merged], dim=1), torch.cat([dom, rest[:, targets]], dim=1) - 1
