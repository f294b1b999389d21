"""Encoder-output reduction shared by VisionDrop (stage s0) and VisionZip: CLS-attention dominant tokens (or, on a
tower without CLS, the tokens that receive the most attention) plus contextual tokens merged by key similarity,
computed on the tower layer whose output the LLM receives."""

from __future__ import annotations

import torch

from visiondrop.layers import TowerLayerView
from visiondrop.merging import ascending_split, contextual_merge
from visiondrop.scoring import take_rows


def dominant_contextual(layer_input: torch.Tensor, features: torch.Tensor, layer: TowerLayerView, dominant: int,
                        contextual: int, fusion: str = "target_plus_mean", fused: bool = False,
                        fp32_softmax: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, T, C] tower tokens -> [n, dominant + contextual, C] and each output token's origin [n, T'].

    With a CLS token (`layer.has_cls`, T = 1 + P): dominant set = CLS + the (dominant - 1) patches with the highest
    CLS attention (summed over heads); origin: CLS -1, patch j -> j. Without one (Qwen2.5-VL): the `dominant`
    tokens that receive the most attention (`layer.received_attention`); origin: token j -> j. Either way in
    ascending order; the rest merge into `contextual` tokens at stride targets by the similarity of their
    head-mean keys. `fused`: selection and merging as the Triton kernels of `selection_kernels` (fp16 on CUDA;
    same results). `fp32_softmax=False`: the CLS softmax in the tower's dtype.
    """
    n_tokens = features.shape[1]
    if dominant < 1 or contextual < 0 or dominant + contextual > n_tokens:
        raise ValueError(f"dominant={dominant} + contextual={contextual} exceeds the {n_tokens} tower tokens")
    if layer.has_cls:
        probs, keys = layer.cls_attention(layer_input, fp32_softmax)
        scores, forced = probs.sum(dim=1), 1  # CLS (index 0) is always the first dominant token
    else:
        (scores, keys), forced = layer.received_attention(layer_input), 0
    if fused:
        from visiondrop.selection_kernels import select_and_merge

        if forced:
            scores[:, 0] = float("inf")
        dom, merged, targets = select_and_merge(scores.float()[:, None], features, keys, dominant, contextual,
                                                fusion, divisor=1)
        return torch.cat([take_rows(features, dom), merged], dim=1), torch.cat([dom, targets], dim=1) - forced
    top = torch.topk(scores[:, forced:], dominant - forced, dim=-1, sorted=False).indices + forced  # every unit
    if forced:
        top = torch.cat([torch.zeros(features.shape[0], 1, dtype=torch.long, device=features.device), top], dim=1)
    dom, rest = ascending_split(n_tokens, top)
    merged, targets = contextual_merge(features, keys.mean(dim=2), contextual, fusion, rest=rest)
    return torch.cat([take_rows(features, dom), merged], dim=1), torch.cat([dom, rest[:, targets]], dim=1) - forced
