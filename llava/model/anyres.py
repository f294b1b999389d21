"""LLaVA-NeXT (anyres): one image's sub-image features -> one visual segment (docs/pipeline.md, 'Preprocessing';
docs/methods.md, 'NeXT layout').

Inputs are the projected features [n_sub, T, D] of the base image and its crops (row-major) and the tower's
per-sub-image origins [n_sub, T] (patch index, -1 for CLS). Outputs are the segment [N, D] and image-wide
origins [N]: patch j of sub-image u -> u * P + j (P patches per sub-image, u = 0 is the base), CLS -> -1,
`image_newline` -> -2.
"""

from __future__ import annotations

import torch

from llava.mm_utils import unpad_image

CLS_ORIGIN = -1
NEWLINE_ORIGIN = -2


def global_origin(origin: torch.Tensor, patches: int) -> torch.Tensor:
    """Per-sub-image origins [n_sub, T] -> image-wide ids (u * patches + j; CLS stays -1)."""
    offset = torch.arange(origin.shape[0], device=origin.device)[:, None] * patches
    return torch.where(origin >= 0, origin + offset, origin)


def merge_flat(features: torch.Tensor, origin: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`flat`: base then every crop, crop-major, no newline: n_sub * T tokens (5 * 576 = 2880 on a 2x2 grid)."""
    return features.flatten(0, 1), global_origin(origin, side * side).flatten()


def _to_map(crops: torch.Tensor, grid_wh: tuple[int, int], side: int) -> torch.Tensor:
    """[g, side*side, C] row-major crops -> one [C, g_h*side, g_w*side] map."""
    g_w, g_h = grid_wh
    channels = crops.shape[-1]
    return crops.reshape(g_h, g_w, side, side, channels).permute(4, 0, 2, 1, 3).reshape(
        channels, g_h * side, g_w * side)


def merge_spatial(features: torch.Tensor, origin: torch.Tensor, grid_wh: tuple[int, int], side: int,
                  image_size: tuple[int, int] | None = None,
                  newline: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stock NeXT merge: base, then the crops as one map in raster order (docs/pipeline.md, 'Preprocessing')."""
    # spatial_unpad passes the original (w, h) as `image_size` (letterbox removed) and image_newline as
    # `newline` (closing every row); plain `spatial` passes neither.
    n_sub, n_tok, channels = features.shape
    if n_tok != side * side:
        raise ValueError(f"spatial merge needs {side * side} patch tokens per sub-image (select_feature 'patch'), "
                         f"got {n_tok}")
    ids = global_origin(origin, n_tok)
    base, base_ids = features[0], ids[0]
    if n_sub == 1:  # no crops: the reference appends one newline to the base image
        if newline is None:
            return base, base_ids
        newline_id = base_ids.new_full((1,), NEWLINE_ORIGIN)
        return torch.cat([base, newline[None].to(base.dtype)]), torch.cat([base_ids, newline_id])
    g_w, g_h = grid_wh
    if g_w * g_h != n_sub - 1:
        raise ValueError(f"{n_sub - 1} crops do not fill the {g_w}x{g_h} anyres grid of this image")
    fmap, omap = _to_map(features[1:], grid_wh, side), _to_map(ids[1:, :, None], grid_wh, side)
    if image_size is not None:
        fmap, omap = unpad_image(fmap, image_size), unpad_image(omap, image_size)
    if newline is not None:
        rows = fmap.shape[1]
        fmap = torch.cat([fmap, newline.to(fmap.dtype)[:, None, None].expand(channels, rows, 1)], dim=2)
        omap = torch.cat([omap, omap.new_full((1, rows, 1), NEWLINE_ORIGIN)], dim=2)
    return torch.cat([base, fmap.flatten(1).T]), torch.cat([base_ids, omap.flatten()])


def merge_multicrop(features: torch.Tensor, origin: torch.Tensor, grid_wh: tuple[int, int], side: int,
                    dominant: int) -> tuple[torch.Tensor, torch.Tensor]:
    """VisionZip / VisionDrop layout of reduced sub-images [n_sub, d + c, D] (docs/methods.md, 'NeXT layout')."""
    # Per sub-image the first `dominant` tokens are dominant (CLS included), the rest contextual. Output: the
    # base as is (CLS, dominant, contextual); the crops' dominant patches in raster order over the full grid;
    # the crops' CLS tokens in crop order; all crops' contextual tokens, crop-major. No unpad, no newline.
    n_sub, _, channels = features.shape
    ids = global_origin(origin, side * side)
    if n_sub == 1:
        return features[0], ids[0]
    g_w, g_h = grid_wh
    if g_w * g_h != n_sub - 1:
        raise ValueError(f"{n_sub - 1} crops do not fill the {g_w}x{g_h} anyres grid of this image")
    dom, dom_origin, dom_ids = features[1:, :dominant], origin[1:, :dominant], ids[1:, :dominant]
    is_cls = dom_origin < 0
    crop = torch.arange(n_sub - 1, device=origin.device)[:, None].expand_as(dom_origin)
    row = (crop // g_w) * side + dom_origin.clamp(min=0) // side
    col = (crop % g_w) * side + dom_origin.clamp(min=0) % side
    order = (row * g_w * side + col)[~is_cls].argsort()
    parts = [features[0], dom[~is_cls][order], dom[is_cls], features[1:, dominant:].reshape(-1, channels)]
    id_parts = [ids[0], dom_ids[~is_cls][order], dom_ids[is_cls], ids[1:, dominant:].flatten()]
    return torch.cat(parts), torch.cat(id_parts)
