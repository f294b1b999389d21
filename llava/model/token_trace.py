"""Which visual tokens every pruning stage keeps, and which tokens each contextual token absorbed, for one image.

`trace_stages` runs one forward and returns, per stage (the LLM input after any encoder stage, then every LLM
stage), the dominant tokens and the contextual tokens with their merge groups, as image-wide patch ids
(patch j of sub-image u -> u * P + j, u = 0 the base image; CLS and NeXT newline tokens are left out). Merge
groups are read by recording each contextual merge (`visiondrop.merging.merge_assignment` on the same inputs)
while the torch path runs; a group covers every patch merged into it at this stage or an earlier one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from unittest import mock

import torch

import visiondrop.encoder_stage
import visiondrop.methods.visiondrop
from visiondrop.merging import merge_assignment

MERGING_MODULES = (visiondrop.encoder_stage, visiondrop.methods.visiondrop)  # callers of contextual_merge


@dataclass
class StageTokens:
    """The visual tokens leaving one stage."""

    name: str
    layer: int | None  # first decoder layer that sees this token set (None: the LLM input)
    tokens: int  # all visual tokens of the stage, CLS / newline included
    dominant: list[int] = field(default_factory=list)  # patch ids of tokens kept as they are
    groups: dict[int, set[int]] = field(default_factory=dict)  # contextual token's own patch -> patches it covers
    carried: dict[int, set[int]] = field(default_factory=dict)  # dominant tokens that carry an earlier group


@dataclass
class _Recorder:
    """Collects (stage, rest, targets, candidates, assign) of every contextual merge of a forward."""

    stage: int = 0
    merges: list[tuple] = field(default_factory=list)

    def wrap_merge(self, original):
        def merge(tokens, metric, n_targets, fusion="target_plus_mean", rest=None):
            n_rest = tokens.shape[-2] if rest is None else rest.shape[-1]
            if n_targets > 0 and n_rest > 0:
                index = torch.arange(n_rest, device=tokens.device).expand(*metric.shape[:-2], n_rest)
                self.merges.append((self.stage, index if rest is None else rest,
                                    *merge_assignment(metric, n_targets, rest)))
            return original(tokens, metric, n_targets, fusion, rest)
        return merge

    def wrap_reduce(self, original):
        def reduce(stage, *args, **kwargs):
            self.stage = stage
            return original(stage, *args, **kwargs)
        return reduce


def _groups(merge: tuple, origin_of, cover: dict[int, set[int]]) -> dict[int, set[int]]:
    """{contextual token's origin: patches it covers} of one recorded merge (batch rows = sub-images or samples)."""
    _, rest, targets, candidates, assign = (t.cpu() if torch.is_tensor(t) else t for t in merge)
    out: dict[int, set[int]] = {}
    for row in range(rest.shape[0]):
        anchors = [origin_of(row, int(rest[row, t])) for t in targets]
        for anchor in anchors:
            out.setdefault(anchor, set(cover.get(anchor, {anchor})))
        for m, target in zip(candidates.tolist(), assign[row].tolist()):
            member = origin_of(row, int(rest[row, m]))
            out[anchors[target]] |= cover.get(member, {member})
    return out


def trace_stages(model, input_ids: torch.Tensor, images, image_sizes) -> list[StageTokens]:
    """One forward of a single sample with the model's pruning; the token sets of every stage."""
    recorder = _Recorder()
    method = getattr(model, "method", None)
    with contextlib.ExitStack() as stack:
        for module in MERGING_MODULES:
            stack.enter_context(mock.patch.object(module, "contextual_merge", recorder.wrap_merge(
                module.contextual_merge)))
        if method is not None:
            stack.enter_context(mock.patch.object(method, "reduce", recorder.wrap_reduce(method.reduce)))
        with torch.no_grad():
            model(input_ids, images=images, image_sizes=image_sizes)
    patches = model.get_vision_tower().num_patches
    origins = [o[0].cpu() for o in model.last_stats.stage_origins]
    layers = sorted(getattr(method, "boundaries", ()) or ())
    cover: dict[int, set[int]] = {}
    stages = []
    for k, origin in enumerate(origins):
        if k == 0:  # the encoder stage merged rows of [sub-image, tower token (CLS first)]
            def origin_of(row, index):
                return row * patches + index - 1 if index > 0 else -1
        else:
            previous = origins[k - 1]

            def origin_of(row, index, previous=previous):
                return int(previous[index])
        groups: dict[int, set[int]] = {}
        for merge in recorder.merges:
            if merge[0] == k:
                groups.update(_groups(merge, origin_of, cover))
        kept = [int(o) for o in origin if o >= 0]
        dominant = [o for o in kept if o not in groups]
        carried = {o: cover[o] for o in dominant if len(cover.get(o, ())) > 1}
        cover = {**carried, **groups}
        groups = {a: g for a, g in groups.items() if a >= 0}
        name = "LLM input" if k == 0 else f"LLM stage {k}"
        stages.append(StageTokens(name, layers[k - 1] if k else None, len(origin), dominant, groups, carried))
    return stages
