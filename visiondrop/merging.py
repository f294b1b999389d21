"""Dominant-token selection and contextual merging (VisionZip / VisionDrop style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def top_indices_ascending(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores, returned in ascending (sequence) order."""
    return torch.topk(scores, k).indices.sort().values


def complement(n: int, chosen: torch.Tensor) -> torch.Tensor:
    """Ascending indices of 0..n-1 not in `chosen`."""
    keep = torch.ones(n, dtype=torch.bool, device=chosen.device)
    keep[chosen] = False
    return torch.nonzero(keep).flatten()


def contextual_merge(tokens: torch.Tensor, metric: torch.Tensor, n_targets: int,
                     fusion: str = "target_plus_mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Merge the remaining tokens [R, D] into `n_targets` contextual tokens.

    Targets are taken at a uniform stride (step = max(1, R // c)) over the remaining list; every other token
    joins the target whose L2-normalised metric is most similar (ties -> first target). Faithful fusion is
    target + mean(group); `size_weighted` gives (target + sum(group)) / (1 + group size).
    Returns (merged [c, D], target positions in the remaining list [c]).
    """
    n_rest = tokens.shape[0]
    if n_targets <= 0 or n_rest == 0:
        return tokens[:0], torch.zeros(0, dtype=torch.long, device=tokens.device)
    step = max(1, n_rest // n_targets)
    targets = torch.arange(0, n_rest, step, device=tokens.device)[:n_targets]
    is_target = torch.zeros(n_rest, dtype=torch.bool, device=tokens.device)
    is_target[targets] = True
    candidates = torch.nonzero(~is_target).flatten()
    unit = F.normalize(metric.float(), dim=-1)
    assign = (unit[candidates] @ unit[targets].T).argmax(dim=1)
    sums = torch.zeros(len(targets), tokens.shape[1], dtype=torch.float32, device=tokens.device)
    sums.index_add_(0, assign, tokens[candidates].float())
    sizes = torch.bincount(assign, minlength=len(targets)).float()[:, None]
    if fusion == "size_weighted":
        merged = (tokens[targets].float() + sums) / (1 + sizes)
    else:
        merged = tokens[targets].float() + sums / sizes.clamp(min=1)
    return merged.to(tokens.dtype), targets
