"""transformers' own LLaVA classes on the same weights: the reference row of the efficiency benchmark (what a
user would otherwise run: `LlavaForConditionalGeneration` / `LlavaNextForConditionalGeneration` /
`VideoLlavaForConditionalGeneration` / `Qwen2_5_VLForConditionalGeneration` and its plain `generate`, unpruned).
The parameters are shared with our model (no copy), so both rows read the same bytes. transformers' Video-LLaVA has
no temporal attention: its row runs our weights without the temporal modules (equal to our model only with them
zeroed), so its video tower does less work than ours. Qwen2.5-VL's row holds our very modules (its vision
transformer, decoder layers, norm, rotary embedding and lm_head are transformers' classes already)."""

from __future__ import annotations

import copy
import functools
import inspect
import time
from collections.abc import Mapping

import torch
from transformers import (
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    Qwen2_5_VLForConditionalGeneration,
    VideoLlavaConfig,
    VideoLlavaForConditionalGeneration,
)
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from benchmarks.runner import summary
from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.random_weights import is_anyres

# Our parameter names -> transformers' (LLaVA-1.5 and NeXT share the layout; NeXT adds image_newline).
RENAMES = (("model.embed_tokens.", "model.language_model.embed_tokens."),
           ("model.layers.", "model.language_model.layers."),
           ("model.norm.", "model.language_model.norm."),
           ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
           ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
           ("model.vision_tower.vision_tower.", "model.vision_tower."),
           ("model.image_newline", "model.image_newline"),
           ("lm_head.", "lm_head."))
# Video-LLaVA: the image tower is transformers' `image_tower`, the video tower's spatial part its `video_tower`.
VIDEO_RENAMES = (("model.vision_tower.vision_tower.", "model.image_tower."),
                 ("video_tower.vision_tower.", "model.video_tower."))


def hf_name(name: str, video: bool = False) -> str:
    """transformers' name of one of our parameters (`video`: in its Video-LLaVA class)."""
    for ours, theirs in (*VIDEO_RENAMES, *RENAMES) if video else RENAMES:
        if name.startswith(ours):
            return theirs + name[len(ours):]
    raise KeyError(f"no transformers counterpart for parameter {name}")


def qwen_reference_model(model):
    """transformers' Qwen2.5-VL over the modules of our Qwen2.5-VL model (`vl_config`, same attention backend)."""
    hf_cfg = copy.deepcopy(model.vl_config)
    for part in (hf_cfg, hf_cfg.text_config, hf_cfg.vision_config):
        part._attn_implementation = model.model.attn_implementation
    with torch.device("meta"):
        hf = Qwen2_5_VLForConditionalGeneration(hf_cfg)
    ours, text = model.model, hf.model.language_model
    hf.model.visual, hf.lm_head = ours.visual, model.lm_head
    text.embed_tokens, text.layers, text.norm, text.rotary_emb = ours.embed_tokens, ours.layers, ours.norm, \
        ours.rotary_emb
    left = [n for n, t in (*hf.named_parameters(), *hf.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"transformers' Qwen2.5-VL reference: {left[:3]} not taken from our model")
    return hf.eval()


def reference_model(model):
    """transformers' LLaVA (NeXT for anyres models; Video-LLaVA, without the temporal modules, for Video-LLaVA;
    Qwen2.5-VL for our Qwen2.5-VL family) over the very tensors of `model` (unpruned, same attention backend); the
    image token is the last vocabulary id (Video-LLaVA: the video token, the image token the one before)."""
    if hasattr(model, "vl_config"):
        return qwen_reference_model(model)
    cfg, tower = model.config, model.get_vision_tower()
    video = getattr(model, "video_tower", None) is not None
    if cfg.mm_projector_type != "mlp2x_gelu":
        raise ValueError(f"the transformers reference needs an mlp2x_gelu projector, not {cfg.mm_projector_type}")
    text = {k: getattr(cfg, k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                         "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                                         "rms_norm_eps", "bos_token_id", "eos_token_id", "pad_token_id")}
    text.update(model_type="llama", rope_theta=getattr(cfg, "rope_theta", 10000.0), tie_word_embeddings=False)
    common = dict(text_config=text, vision_config=tower.config.to_dict(), image_token_index=cfg.vocab_size - 1,
                  projector_hidden_act="gelu", vision_feature_layer=tower.select_layer,
                  vision_feature_select_strategy="default" if tower.select_feature == "patch" else "full",
                  tie_word_embeddings=False)
    if video:
        hf_cfg, cls = VideoLlavaConfig(**{**common, "image_token_index": cfg.vocab_size - 2},
                                       video_token_index=cfg.vocab_size - 1), VideoLlavaForConditionalGeneration
    elif is_anyres(cfg):
        hf_cfg, cls = LlavaNextConfig(image_grid_pinpoints=cfg.image_grid_pinpoints, **common), \
            LlavaNextForConditionalGeneration
    else:
        hf_cfg, cls = LlavaConfig(**common), LlavaForConditionalGeneration
    hf_cfg._attn_implementation = model.model.attn_implementation
    for sub in (hf_cfg.text_config, hf_cfg.vision_config):
        sub._attn_implementation = model.model.attn_implementation
    with torch.device("meta"):
        hf = cls(hf_cfg)
    weights = {hf_name(n, video): p for n, p in model.named_parameters()
               if (not n.startswith("model.image_newline") or is_anyres(cfg)) and ".temporal_steps." not in n}
    missing, unexpected = hf.load_state_dict(weights, strict=False, assign=True)
    if unexpected or [n for n in missing if "image_newline" not in n]:
        raise ValueError(f"transformers reference: missing {missing[:3]}, unexpected {unexpected[:3]}")
    device = model.device
    hf.model.language_model.rotary_emb = LlamaRotaryEmbedding(config=hf_cfg.text_config).to(device)
    for module in hf.modules():  # CLIP's non-persistent position ids were left on the meta device
        ids = module._buffers.get("position_ids")
        if ids is not None and ids.is_meta:
            module._buffers["position_ids"] = torch.arange(ids.shape[-1], device=device).expand(1, -1)
    if is_anyres(cfg) and hf.model.image_newline.is_meta:
        hf.model.image_newline = torch.nn.Parameter(torch.zeros(cfg.hidden_size, device=device, dtype=model.dtype))
    return hf.eval()


def qwen_reference_inputs(hf, input_ids: torch.Tensor, images: Mapping) -> dict:
    """A Qwen2.5-VL benchmark batch (already in transformers' layout) for its `generate`, with the multimodal token
    types where this transformers version takes them (5.2x computes M-RoPE positions from them)."""
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), **images}
    if "mm_token_type_ids" in inspect.signature(hf.forward).parameters:
        batch["mm_token_type_ids"] = (input_ids == hf.config.image_token_id).int()
    return batch


def reference_inputs(hf, input_ids: torch.Tensor, images, image_sizes=None) -> dict:
    """Our benchmark batch as transformers' `generate` takes it: the placeholder expanded to one image token per
    visual token (NeXT: the count its own anyres layout gives), pixel values (NeXT: [B, crops, 3, S, S]).
    Qwen2.5-VL's batch (the image processor's output) is its own already."""
    if isinstance(images, Mapping):
        return qwen_reference_inputs(hf, input_ids, images)
    token, key = hf.config.image_token_index, "pixel_values"
    side = hf.config.vision_config.image_size // hf.config.vision_config.patch_size
    if isinstance(images, torch.Tensor) and images.dim() == 5:  # Video-LLaVA clips: every frame's tokens, CLS kept
        token, key = hf.config.video_token_index, "pixel_values_videos"
        pixels, sizes = images.transpose(1, 2), None
        n_visual = images.shape[2] * (side ** 2 + 1)
    elif isinstance(images, torch.Tensor):
        pixels, sizes = images, None
        n_visual = side ** 2
    else:
        pixels, sizes = torch.stack(list(images)), torch.tensor(image_sizes, device=input_ids.device).flip(-1)
        with torch.no_grad():
            out = hf.model.get_image_features(pixels, sizes, vision_feature_layer=hf.config.vision_feature_layer,
                                              vision_feature_select_strategy=hf.config.vision_feature_select_strategy)
        n_visual = getattr(out, "pooler_output", out)[0].shape[0]
    rows = []
    for ids in input_ids:
        ids = ids.masked_fill(ids == token, 3)
        at = (ids == IMAGE_TOKEN_INDEX).nonzero()[:, 0]  # one placeholder (Video-LLaVA: one per frame, adjacent)
        rows.append(torch.cat([ids[:at[0]], ids.new_full((n_visual,), token), ids[at[-1] + 1:]]))
    batch = {"input_ids": torch.stack(rows), key: pixels.to(hf.dtype)}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    if sizes is not None:
        batch["image_sizes"] = sizes
    return batch


@torch.no_grad()
def reference_generate(hf, batch: dict, n_tokens: int) -> torch.Tensor:
    """transformers' plain greedy `generate` of exactly `n_tokens` new tokens (EOS ignored); the new ids [B, n]."""
    out = hf.generate(**batch, max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False,
                      pad_token_id=hf.config.text_config.pad_token_id)
    return out[:, batch["input_ids"].shape[1]:]


def _elapsed_ms(fn, cuda: bool) -> float:
    """Device milliseconds of `fn()` (CUDA events; perf_counter on the CPU)."""
    if not cuda:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def measure_reference(hf, batch: dict, points: list[int], warmup: int, repeats: int, decode_repeats: int) -> dict:
    """End-to-end ms of transformers' `generate` for every G in `points` (G = 1 is the TTFT; the longest G from
    `decode_repeats` runs), the decode ms per token from the medians, peak memory, the visual token count."""
    cuda = batch["input_ids"].is_cuda
    for _ in range(warmup):
        reference_generate(hf, batch, min(points))
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    e2e = {}
    for g in points:
        n = decode_repeats if g == max(points) else repeats
        e2e[str(g)] = summary([_elapsed_ms(functools.partial(reference_generate, hf, batch, g), cuda)
                               for _ in range(n)])
    first, last = e2e[str(min(points))], e2e[str(max(points))]
    decode = None
    if max(points) > 1:
        per = (last["median"] - first["median"]) / (max(points) - 1)
        decode = {"median": per, "p10": per, "p90": per, "n": last["n"]}  # from medians: no spread
    token = hf.config.video_token_id if "pixel_values_videos" in batch else hf.config.image_token_id
    n_visual = int((batch["input_ids"][0] == token).sum())
    return {"latency_ms": {"vit": None, "select": None, "prefill": None, "ttft": first if min(points) == 1 else None,
                           "decode_per_token": decode, "e2e": e2e},
            "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda else None, "n_visual": n_visual}
