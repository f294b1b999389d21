"""Vision tower + projector, and splicing image features into the embedded prompt."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import get_anyres_image_grid_shape
from llava.model.anyres import merge_flat, merge_multicrop, merge_spatial
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
from llava.model.multimodal_projector.builder import build_vision_projector
from llava.model.sequence import SequenceBatch, pad_rows
from visiondrop.reduction import UnitTokens


class LlavaMetaModel(nn.Module):
    """Holds `mm_projector`, the vision tower (attached after loading) and NeXT's `image_newline`."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.vision_tower: CLIPVisionTower | None = None
        if getattr(config, "mm_hidden_size", None) is not None:
            self.mm_projector = build_vision_projector(config)
        if "unpad" in getattr(config, "mm_patch_merge_type", "flat"):
            self.image_newline = nn.Parameter(torch.zeros(config.hidden_size))


class LlavaMultimodalMixin:
    """Encoding images and building the spliced, right-padded `SequenceBatch` for the decoder loop."""

    def get_vision_tower(self) -> CLIPVisionTower:
        tower = self.model.vision_tower
        if tower is None:
            raise RuntimeError("this model has no vision tower attached: load it with load_pretrained_model()")
        return tower

    def towers(self) -> list[nn.Module]:
        """Every tower whose output an encoder stage may reduce (LLaVA: the vision tower)."""
        return [self.get_vision_tower()]

    @property
    def tower_label(self) -> str | None:
        """What the visual tower is, where result files must say so (Video-LLaVA: with or without its temporal
        attention); None: the checkpoint's own tower, nothing to add."""
        return None

    def tower_for(self, images: torch.Tensor) -> nn.Module:
        """The tower that encodes `images` (LLaVA: always the vision tower)."""
        return self.get_vision_tower()

    def encode_units(self, images: torch.Tensor) -> UnitTokens:
        """[n, 3, H, W] -> the tower's tokens of the n units, features projected to the LLM width (model dtype)."""
        units = self.tower_for(images).encode(images.to(self.device))
        return replace(units, features=self.model.mm_projector(units.features.to(self.dtype)))

    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[n, 3, H, W] -> projected features [n, T, D] (model dtype) and the tower origins [n, T]."""
        units = self.encode_units(images)
        return units.features, units.origin

    def image_segments(self, images, image_sizes=None) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        """Per image: its visual tokens [T, D], their origins [T] and the number of sub-images encoded."""
        # A 4-D tensor [n, 3, H, W] is one view per image (LLaVA-1.5). A list of per-image stacks [1 + g, 3, S, S]
        # (or a 5-D tensor) is anyres: all sub-images go through one tower call, then each image's base and crops
        # are merged per config.mm_patch_merge_type, or in the multi-crop layout when the tower reduces tokens
        # (encoder-stage methods, docs/methods.md, 'NeXT layout'). `image_sizes` are the original (w, h) per image.
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            units = self.encode_units(images)
            return [(f, o, 1) for f, o in zip(units.features, units.origin)]
        views = [x if x.dim() == 4 else x[None] for x in images]
        units = self.encode_units(torch.cat([v.to(self.device) for v in views]))
        counts = [v.shape[0] for v in views]
        if image_sizes is not None and len(image_sizes) != len(views):
            raise ValueError(f"{len(image_sizes)} image_sizes for {len(views)} images")
        sizes = list(image_sizes) if image_sizes is not None else [None] * len(views)
        return [(*self.merge_sub_images(f, o, size, units.dominant), f.shape[0])
                for f, o, size in zip(units.features.split(counts), units.origin.split(counts), sizes)]

    def merge_sub_images(self, features: torch.Tensor, origin: torch.Tensor, image_size: tuple[int, int] | None,
                         dominant: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's sub-image features [n_sub, T, D] -> its visual segment [N, D] and origins [N] (`dominant`:
        the leading dominant tokens per sub-image of an encoder stage's output)."""
        tower = self.get_vision_tower()
        side = tower.config.image_size // tower.config.patch_size
        merge = getattr(self.config, "mm_patch_merge_type", None) or "flat"
        if merge != "flat" and not merge.startswith("spatial"):
            raise ValueError(f"config.mm_patch_merge_type={merge!r}: expected 'flat', 'spatial' or 'spatial_unpad'")
        if merge == "flat" and not tower.reduces_tokens:
            return merge_flat(features, origin, side)
        grid = self._anyres_grid(image_size, merge) if features.shape[0] > 1 else (0, 0)
        if tower.reduces_tokens:
            return merge_multicrop(features, origin, grid, side, dominant)
        unpad = "unpad" in merge
        return merge_spatial(features, origin, grid, side, image_size if unpad else None,
                             self.model.image_newline if unpad else None)

    def _anyres_grid(self, image_size: tuple[int, int] | None, merge: str) -> tuple[int, int]:
        """The (g_w, g_h) crop grid of an image of original size (w, h)."""
        pinpoints = getattr(self.config, "image_grid_pinpoints", None)
        if image_size is None or pinpoints is None:
            raise ValueError(f"merging anyres crops ({merge!r}) needs image_sizes=[(w, h), ...] and "
                             "config.image_grid_pinpoints")
        return get_anyres_image_grid_shape(tuple(image_size), pinpoints, self.get_vision_tower().config.image_size)

    def prepare_multimodal_batch(self, input_ids, attention_mask=None, images=None, image_sizes=None) -> SequenceBatch:
        """Embed the prompt ids and splice one feature block per IMAGE_TOKEN_INDEX placeholder.

        `input_ids` is [B, T] (right-padded; `attention_mask` marks real tokens) or a list of 1-D tensors.
        `images` holds one image per placeholder, in prompt order across the batch (text-only samples take
        none): a [n, 3, H, W] tensor, or anyres per-image stacks with `image_sizes` (see `image_segments`).
        Adjacent placeholders (video frames) form one visual segment.
        """
        rows = _as_rows(input_ids, attention_mask)
        n_placeholders = sum(int((r == IMAGE_TOKEN_INDEX).sum()) for r in rows)
        if n_placeholders and images is None:
            raise ValueError(f"the prompt has {n_placeholders} image placeholder(s) but no images were given")
        if images is not None and len(images) != n_placeholders:
            raise ValueError(f"{len(images)} images for {n_placeholders} <image> placeholders in the prompts")
        segments = self.image_segments(images, image_sizes) if n_placeholders else []
        embed = self.model.embed_tokens
        max_len = getattr(self.config, "tokenizer_model_max_length", None)
        seqs, origins, starts, lengths, units = [], [], [], [], []
        next_image = 0
        for ids in rows:
            ids = ids.cpu()  # placeholders are found on the host; only text pieces go to the device
            pieces, visual, start, seg_len, n_units = [], [], 0, 0, 0
            cut = [-1, *torch.nonzero(ids == IMAGE_TOKEN_INDEX).flatten().tolist(), ids.numel()]
            for k in range(len(cut) - 1):
                text = ids[cut[k] + 1: cut[k + 1]]
                pieces.append(embed(text.to(self.device, non_blocking=True)))
                if k + 1 < len(cut) - 1:
                    if seg_len and text.numel():
                        raise ValueError("images of one sample must be adjacent placeholders (one visual segment)")
                    if not seg_len:
                        start = sum(p.shape[0] for p in pieces)
                    feats, origin, n_sub = segments[next_image]
                    visual.append(origin)
                    pieces.append(feats)
                    seg_len += feats.shape[0]
                    n_units += n_sub
                    next_image += 1
            seq = torch.cat(pieces)[:max_len] if max_len else torch.cat(pieces)
            seqs.append(seq)
            starts.append(start)
            lengths.append(min(seg_len, max(0, seq.shape[0] - start)))
            units.append(n_units)
            origins.append(torch.cat(visual) if visual else torch.zeros(0, dtype=torch.long, device=self.device))
        key_mask = pad_rows([torch.ones(s.shape[0], dtype=torch.bool, device=self.device) for s in seqs], False)
        positions = (key_mask.long().cumsum(dim=1) - 1).clamp(min=0)
        return SequenceBatch(
            hidden=pad_rows(seqs),
            key_mask=key_mask,
            positions=positions,
            visual_start=torch.tensor(starts),
            visual_len=torch.tensor(lengths),
            origin=origins,
            visual_units=torch.tensor(units),
            lengths=torch.tensor([s.shape[0] for s in seqs]),
        )


def _as_rows(input_ids, attention_mask) -> list[torch.Tensor]:
    """Split a padded id batch (or a list of 1-D id tensors) into its real-token rows."""
    if isinstance(input_ids, (list, tuple)):
        return [torch.as_tensor(r) for r in input_ids]
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if attention_mask is None:
        return list(input_ids)
    return [ids[mask.bool()] for ids, mask in zip(input_ids, attention_mask)]
