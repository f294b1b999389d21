"""Dominant-token selection and contextual merging (VisionZip / VisionDrop style)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from visiondrop.scoring import take_rows


def ascending_split(n: int, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(`chosen` in ascending order, the other indices of 0..n-1 in ascending order) per row of a batch: one
    scatter of a permutation that puts the chosen indices first (no sort, no host sync)."""
    k = chosen.shape[-1]
    is_chosen = torch.zeros(*chosen.shape[:-1], n, dtype=torch.bool, device=chosen.device).scatter_(-1, chosen, True)
    chosen_so_far = is_chosen.cumsum(dim=-1)  # chosen indices <= j
    index = torch.arange(n, device=chosen.device).expand_as(chosen_so_far)
    slot = torch.where(is_chosen, chosen_so_far - 1, k + index - chosen_so_far)
    order = torch.empty_like(slot).scatter_(-1, slot, index)
    return order[..., :k], order[..., k:]


def top_indices_ascending(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores along the last dim, returned in ascending (sequence) order."""
    return ascending_split(scores.shape[-1], torch.topk(scores, k, dim=-1).indices)[0]


def complement(n: int, chosen: torch.Tensor) -> torch.Tensor:
    """Ascending indices of 0..n-1 not in `chosen` (per row of a batch, without a host sync)."""
    return ascending_split(n, chosen)[1]


@functools.lru_cache(maxsize=256)
def _stride_split(n_rest: int, n_targets: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Stride targets (step = max(1, R // c)) and the other positions of a remaining list of R tokens."""
    step = max(1, n_rest // n_targets)
    targets = torch.arange(0, n_rest, step)[:n_targets]
    return targets.to(device), complement(n_rest, targets).to(device)


def _remaining(x: torch.Tensor, positions: torch.Tensor, rest: torch.Tensor | None) -> torch.Tensor:
    """Rows `positions` of the remaining list: of x itself, or of x's rows `rest`."""
    return x[..., positions, :] if rest is None else take_rows(x, rest[..., positions])


def merge_assignment(metric: torch.Tensor, n_targets: int,
                     rest: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Contextual merging's groups: (target positions [c] and candidate positions [R-c] in the remaining list,
    and the target each candidate joins [..., R-c], an index into the targets). Arguments as `contextual_merge`."""
    n_rest = metric.shape[-2] if rest is None else rest.shape[-1]
    targets, candidates = _stride_split(n_rest, n_targets, metric.device)
    unit = F.normalize(metric, dim=-1)
    assign = (_remaining(unit, candidates, rest) @ _remaining(unit, targets, rest).transpose(-1, -2)).argmax(dim=-1)
    return targets, candidates, assign


def contextual_merge(tokens: torch.Tensor, metric: torch.Tensor, n_targets: int, fusion: str = "target_plus_mean",
                     rest: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge the remaining tokens [..., R, D] into `n_targets` contextual tokens.

    Targets are taken at a uniform stride (step = max(1, R // c)) over the remaining list; every other token
    joins the target whose L2-normalised metric is most similar (ties -> first target). Faithful fusion is
    target + mean(group); `size_weighted` gives (target + sum(group)) / (1 + group size). As in the reference
    code, everything runs in the inputs' dtype and group sums are a one-hot matrix product.
    With `rest` ([..., R] indices), `tokens` / `metric` are a whole segment and the remaining list is their rows
    `rest` (each part gathered straight from the segment). Returns (merged [..., c, D], target positions in the
    remaining list [c]).
    """
    n_rest = tokens.shape[-2] if rest is None else rest.shape[-1]
    if n_targets <= 0 or n_rest == 0:
        return tokens[..., :0, :], torch.zeros(0, dtype=torch.long, device=tokens.device)
    targets, candidates, assign = merge_assignment(metric, n_targets, rest)
    one_hot = (assign[..., None] == torch.arange(len(targets), device=assign.device)).to(tokens.dtype)  # [.., R-c, c]
    sums = one_hot.transpose(-1, -2) @ _remaining(tokens, candidates, rest)
    sizes = one_hot.sum(dim=-2)[..., None]
    target_tokens = _remaining(tokens, targets, rest)
    if fusion == "size_weighted":
        return (target_tokens + sums) / (1 + sizes), targets
    return target_tokens + sums / sizes.clamp(min=1), targets


def dpc_knn_merge(tokens: torch.Tensor, n_clusters: int, generator: torch.Generator | None = None,
                  dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster tokens [n, C] with DPC-KNN (SparseVLM's recycling) and return each cluster's mean.

    Distances are L2 / sqrt(C); density = exp(-mean squared distance to the n_clusters nearest tokens) plus
    uniform noise * 1e-6 from `generator` (None: no noise); delta = distance to the nearest denser token (the
    largest distance for the densest); centres = top n_clusters of delta * density; every token joins its
    nearest centre; a cluster's mean sums its tokens weighted 1 / (size + 1e-6). Every step runs in `dtype`
    (None: the tokens' dtype, as the release). Returns (cluster means [k, C] in descending centre-score order,
    centre indices [k]).
    """
    x = tokens if dtype is None else tokens.to(dtype)
    n, width = x.shape
    n_clusters = min(n_clusters, n)
    rows = max(1, 2**24 // max(1, n * width))  # differences as the release takes them, ~16M entries at a time
    dist = torch.cat([(x[i:i + rows, None] - x[None]).norm(dim=-1) for i in range(0, n, rows)]) / width**0.5
    nearest = dist.topk(n_clusters, dim=-1, largest=False).values
    density = torch.exp(-(nearest**2).mean(dim=-1))
    if generator is not None:
        density = density + torch.rand(n, generator=generator).to(density) * 1e-6
    denser = density[None, :] > density[:, None]  # [i, j]: token j is denser than token i
    delta = torch.where(denser, dist, dist.max()).min(dim=-1).values
    centres = torch.topk(delta * density, n_clusters).indices
    assign = dist[centres].argmin(dim=0)
    assign[centres] = torch.arange(n_clusters, device=x.device)
    sizes = torch.bincount(assign, minlength=n_clusters).to(x.dtype)[:, None]
    weighted = x * (1 / (sizes + 1e-6))[assign]
    return torch.zeros_like(x[:n_clusters]).index_add_(0, assign, weighted).to(tokens.dtype), centres
