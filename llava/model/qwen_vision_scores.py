"""VisionDrop's encoder score on Qwen2.5-VL's vision transformer, which has no CLS token (docs/qwen.md).

A visual token's score is the mean attention it receives from all visual tokens of its image in the last
full-attention vision block (heads and queries averaged), read from that block's own queries and keys (after its
norm1, qkv projection and 2-D rotary embedding). The LLM sees merged tokens (one per 2x2 patch group): a merged
token scores the mean of its patches' scores.
"""

from __future__ import annotations

import torch
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel,
    apply_rotary_pos_emb_vision,
)
from transformers.vision_utils import get_vision_window_index


@torch.no_grad()
def visual_token_scores(visual: Qwen2_5_VisionTransformerPretrainedModel, pixel_values: torch.Tensor,
                        grid_thw: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run the tower once; returns its merged features [N, D] (as `visual(...).pooler_output`) and per image the
    scores of its merged tokens [n_i], in the features' order."""
    block = visual.blocks[visual.fullatt_block_indexes[-1]]
    seen = {}

    def keep_input(module, args, kwargs):
        seen.update(hidden=args[0] if args else kwargs["hidden_states"], rope=kwargs["position_embeddings"],
                    bounds=kwargs["cu_seqlens"].tolist())

    handle = block.register_forward_pre_hook(keep_input, with_kwargs=True)
    try:
        features = visual(pixel_values.to(visual.dtype), grid_thw=grid_thw).pooler_output
    finally:
        handle.remove()
    heads = block.attn.num_heads
    q, k, _ = block.attn.qkv(block.norm1(seen["hidden"])).unflatten(-1, (3, heads, -1)).unbind(-3)  # [P, H, d]
    q, k = apply_rotary_pos_emb_vision(q, k, *seen["rope"])
    received = []
    for start, stop in zip(seen["bounds"][:-1], seen["bounds"][1:]):  # full attention: one image at a time
        logits = torch.einsum("qhd,khd->hqk", q[start:stop], k[start:stop]) * block.attn.scaling
        received.append(logits.softmax(dim=-1).mean(dim=(0, 1)))
    per_merged = torch.cat(received).unflatten(0, (-1, visual.spatial_merge_unit)).mean(dim=1)
    window_index, _ = get_vision_window_index(grid_thw, visual.spatial_merge_size, visual.window_size,
                                              visual.patch_size)
    scores = per_merged[torch.argsort(window_index.to(per_merged.device))]  # the tower's window order undone
    return features, list(scores.split((grid_thw.prod(-1) // visual.spatial_merge_unit).tolist()))
