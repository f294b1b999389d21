"""VisionDrop's encoder score on Qwen2.5-VL's vision transformer, which has no CLS token (docs/qwen.md).

A visual token's score is the mean attention it receives from all visual tokens of its image in the last
full-attention vision block (heads and queries averaged), read from that block's own queries and keys (after its
norm1, qkv projection and 2-D rotary embedding). The LLM sees merged tokens (one per 2x2 patch group): a merged
token scores the mean of its patches' scores, and its key (what contextual merging compares) is the mean of its
patches' keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel,
    Qwen2_5_VLVisionBlock,
    apply_rotary_pos_emb_vision,
)
from transformers.vision_utils import get_vision_window_index

QUERY_CHUNK = 512  # queries per attention map (heads x chunk x patches), so a 6912-patch image stays small


@dataclass
class QwenScoredBlock:
    """The last full-attention block as encoder-stage methods read it for one image (visiondrop.layers.
    TowerLayerView without CLS): its rotary tables over the image's patches and, per merged token in the order the
    LLM receives them, the token's place in the tower's window order."""

    block: Qwen2_5_VLVisionBlock
    cos: torch.Tensor
    sin: torch.Tensor
    order: torch.Tensor
    merge_unit: int

    has_cls = False

    @property
    def head_dim(self) -> int:
        return self.block.attn.head_dim

    def received_attention(self, layer_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For the block's input over one image's patches [1, P, C] (window order): each merged token's score
        [1, n] (softmax in fp32 over the image's patches of q . k * head_dim^-0.5, averaged over heads and every
        query patch, then over the token's patches) and key [1, n, H, d] (its patches' post-rotary keys averaged)."""
        attn = self.block.attn
        q, k, _ = attn.qkv(self.block.norm1(layer_input[0])).unflatten(-1, (3, attn.num_heads, -1)).unbind(-3)
        q, k = apply_rotary_pos_emb_vision(q, k, self.cos, self.sin)  # [P, H, d]
        keys = k.float().permute(1, 2, 0)  # [H, d, P]
        received = torch.zeros(k.shape[0], dtype=torch.float32, device=k.device)
        for start in range(0, q.shape[0], QUERY_CHUNK):
            logits = torch.matmul(q[start:start + QUERY_CHUNK].float().transpose(0, 1), keys) * attn.scaling
            received += logits.softmax(dim=-1).sum(dim=(0, 1))
        received /= q.shape[0] * q.shape[1]
        per_token = received.unflatten(0, (-1, self.merge_unit)).mean(dim=1)[self.order]
        merged_keys = k.unflatten(0, (-1, self.merge_unit)).mean(dim=1)[self.order]
        return per_token[None], merged_keys[None]


def scored_tower_pass(visual: Qwen2_5_VisionTransformerPretrainedModel, pixel_values: torch.Tensor,
                      grid_thw: torch.Tensor) -> tuple[torch.Tensor, list[tuple[QwenScoredBlock, torch.Tensor]]]:
    """Run the tower once; returns its merged features [N, D] (as `visual(...).pooler_output`) and, per image, the
    scored block's view and its input over the image's patches [1, P_i, C]."""
    block = visual.blocks[visual.fullatt_block_indexes[-1]]
    seen = {}

    def keep_input(module, args, kwargs):
        seen.update(hidden=args[0] if args else kwargs["hidden_states"], rope=kwargs["position_embeddings"])

    handle = block.register_forward_pre_hook(keep_input, with_kwargs=True)
    try:
        features = visual(pixel_values.to(visual.dtype), grid_thw=grid_thw).pooler_output
    finally:
        handle.remove()
    window_index, _ = get_vision_window_index(grid_thw, visual.spatial_merge_size, visual.window_size,
                                              visual.patch_size)
    window_index = window_index.to(features.device)
    unit = visual.spatial_merge_unit
    out, first = [], 0
    for n in (grid_thw.prod(-1) // unit).tolist():  # full attention never crosses images: one image at a time
        order = torch.argsort(window_index[first:first + n] - first)
        patches = slice(first * unit, (first + n) * unit)
        cos, sin = (table[patches] for table in seen["rope"])
        out.append((QwenScoredBlock(block, cos, sin, order, unit), seen["hidden"][None, patches]))
        first += n
    return features, out


@torch.no_grad()
def visual_token_scores(visual: Qwen2_5_VisionTransformerPretrainedModel, pixel_values: torch.Tensor,
                        grid_thw: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run the tower once; returns its merged features [N, D] and per image the scores of its merged tokens [n_i],
    in the features' order."""
    features, scored = scored_tower_pass(visual, pixel_values, grid_thw)
    return features, [view.received_attention(x)[0][0] for view, x in scored]
