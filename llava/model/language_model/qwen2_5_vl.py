"""Qwen2.5-VL as a model family of our decoder loop: loading its checkpoints, chat prompts, splicing, M-RoPE.

transformers' vision transformer (windowed + full-attention blocks, 2x2 PatchMerger), decoder layers, RMSNorm and
M-RoPE rotary embedding are used as modules, never copied or edited; the prefill / decode loop is LLaVA's
(`LlavaLlamaModel` run over these classes). What the family owns:

* prompts: the checkpoint's chat template, each image one `<|vision_start|><|image_pad|><|vision_end|>` whose pad
  is expanded to the image's merged-token count (grid_t * grid_h * grid_w / merge_size^2), as transformers'
  processor does; the image processor's dynamic resolution is bounded by `min_pixels` / `max_pixels`;
* splicing: the vision features replace the `<|image_pad|>` run of each sample (one image, one visual segment);
* positions [3, B, T] (temporal, height, width) by transformers' rope-index rule: text counts on along all three
  axes; an image starting at p with an h x w merged grid puts token (r, c) at (p, p + r, p + c); the text after it
  resumes at p + max(h, w). A decode token takes one past the largest real position on every axis, which is
  transformers' `rope_deltas` rule (the loop's 1-D decode positions expand to the three axes unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2VLImageProcessorPil
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel,
    Qwen2_5_VLDecoderLayer,
    Qwen2_5_VLRMSNorm,
    Qwen2_5_VLRotaryEmbedding,
    Qwen2_5_VLVisionRotaryEmbedding,
    rotate_half,
)

from llava.model.checkpoint import assign_weights, read_weights
from llava.model.family import QWEN_FAMILY, check_config_family
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM, LlavaLlamaModel
from llava.model.llava_arch import _as_rows
from llava.model.qwen_vision_scores import scored_tower_pass
from llava.model.sequence import SequenceBatch, pad_rows
from visiondrop.execution import Execution
from visiondrop.methods import build_method
from visiondrop.methods.base import Method
from visiondrop.reduction import UnitTokens
from visiondrop.timing import SectionTimer, timed


class QwenVLDecoder(LlavaLlamaModel):
    """Our decoder loop over Qwen2.5-VL's decoder layers, RMSNorm and M-RoPE (built from the text config); the
    vision transformer is `visual`."""

    layer_class, norm_class, rotary_class = Qwen2_5_VLDecoderLayer, Qwen2_5_VLRMSNorm, Qwen2_5_VLRotaryEmbedding

    def __init__(self, config: Qwen2_5_VLConfig):
        super().__init__(config.text_config)
        self.visual = Qwen2_5_VisionTransformerPretrainedModel(config.vision_config)

    def layer_view(self, index: int) -> QwenDecoderLayerView:
        return QwenDecoderLayerView(self.layers[index], index)


class QwenVLForCausalLM(LlavaLlamaForCausalLM):
    """Qwen2.5-VL on our loop: `model` (QwenVLDecoder) and `lm_head`; `config` is the text config (the loop's),
    `vl_config` the whole checkpoint config. `generate` / `forward` take `images` as the image processor's output
    (`pixel_values`, `image_grid_thw`: one image per sample that has an `<|image_pad|>` run, in batch order)."""

    model_class = QwenVLDecoder
    unpruned_model = QWEN_FAMILY
    supports_fast_path = False  # the CUDA-graph replay is not wired to this family yet: generation stays eager
    method: Method | None = None
    timer: SectionTimer | None = None

    def __init__(self, config: Qwen2_5_VLConfig):
        super().__init__(config)
        self.config = config.text_config
        self.vl_config = config

    def set_pruning(self, config) -> None:
        """Install a validated pruning config of this family (`load_model_for_eval`): its encoder stage after the
        PatchMerger (methods that score without CLS) and its LLM stages, with a fresh execution layer."""
        check_config_family(config.model, QWEN_FAMILY)
        method = build_method(config)
        if method.has_encoder_stage and not method.scores_without_cls:
            raise NotImplementedError(f"{config.method}'s encoder stage scores with a CLS token, which Qwen2.5-VL's "
                                      "vision transformer does not have")
        self.model.install_method(method, Execution(config.execution), config.source)
        self.method, self.pruning_config = method, config
        self.attach_timer(self.timer)

    def attach_timer(self, timer: SectionTimer | None) -> None:
        """Time the tower ("vit"), the encoder stage ("select_encoder") and the LLM stages ("select_llm")."""
        self.timer = timer
        self.model.time_stages(timer)

    @property
    def reduces_tokens(self) -> bool:
        return self.method is not None and bool(self.method.has_encoder_stage)

    def encode_images(self, images: Mapping) -> list[UnitTokens]:
        """The image processor's output -> per image its merged visual tokens [1, n_i, D] (model dtype) and their
        merged-token indices [1, n_i], after the method's encoder stage if it has one (docs/qwen.md)."""
        visual = self.model.visual
        grid = images["image_grid_thw"].to(self.device)
        pixels = images["pixel_values"].to(self.device, visual.dtype)
        with timed(self.timer, "vit"):
            if self.reduces_tokens:
                features, scored = scored_tower_pass(visual, pixels, grid)
            else:
                features = visual(pixels, grid_thw=grid).pooler_output
        features = features.to(self.dtype).split((grid.prod(-1) // visual.spatial_merge_unit).tolist())
        if not self.reduces_tokens:
            return [UnitTokens(f[None], torch.arange(f.shape[0], device=f.device)[None], f.shape[0]) for f in features]
        with timed(self.timer, "select_encoder"):
            return [self.method.reduce_encoder(view, x, f[None], self.model.execution)
                    for f, (view, x) in zip(features, scored)]

    def prepare_multimodal_batch(self, input_ids, attention_mask=None, images=None, image_sizes=None) -> SequenceBatch:
        """Embed the prompt ids, put each sample's image features in place of its `<|image_pad|>` run and give
        every token its M-RoPE position [3, B, T] (module docstring). `image_sizes` is not used by this family."""
        rows = [r.cpu() for r in _as_rows(input_ids, attention_mask)]
        spans = [image_span(r, self.vl_config.image_token_id) for r in rows]
        n_images = sum(n > 0 for _, n in spans)
        n_given = 0 if images is None else len(images["image_grid_thw"])
        if n_given != n_images:
            raise ValueError(f"{n_given} images for {n_images} prompts with an <|image_pad|> run")
        units = iter(self.encode_images(images) if n_images else [])
        grids = iter(images["image_grid_thw"].tolist() if n_images else [])
        merge = self.vl_config.vision_config.spatial_merge_size
        seqs, positions, origins = [], [], []
        for ids, (start, n) in zip(rows, spans):
            embeds = self.model.embed_tokens(ids.to(self.device))
            pos = mrope_positions(ids.numel(), start, None).to(self.device)
            origin = torch.zeros(0, dtype=torch.long, device=self.device)
            if n:
                unit = next(units)
                t, h, w = next(grids)
                if h * w // merge**2 != n or t != 1:
                    raise ValueError(f"an image of grid {t}x{h}x{w} for a run of {n} <|image_pad|> tokens: expand "
                                     "the pad with the image processor's grid")
                # survivors of an encoder stage keep the 3-D positions of the merged tokens they stand for
                origin = unit.origin[0]
                pos = mrope_positions(ids.numel(), start, (h // merge, w // merge)).to(self.device)
                pos = torch.cat([pos[:, :start], pos[:, start + origin], pos[:, start + n:]], dim=1)
                embeds = torch.cat([embeds[:start], unit.features[0], embeds[start + n:]])
            seqs.append(embeds)
            positions.append(pos)
            origins.append(origin)
        key_mask = pad_rows([torch.ones(s.shape[0], dtype=torch.bool, device=self.device) for s in seqs], False)
        return SequenceBatch(
            hidden=pad_rows(seqs), key_mask=key_mask, positions=pad_rows([p.T for p in positions]).permute(2, 0, 1),
            visual_start=torch.tensor([s for s, _ in spans]), visual_len=torch.tensor([o.numel() for o in origins]),
            origin=origins, visual_units=torch.tensor([int(n > 0) for _, n in spans]),
            lengths=torch.tensor([s.shape[0] for s in seqs]))


def image_span(ids: torch.Tensor, image_token_id: int) -> tuple[int, int]:
    """(start, length) of the `<|image_pad|>` run of one prompt ((0, 0) without one); refuses several runs."""
    where = torch.nonzero(ids == image_token_id).flatten()
    if where.numel() == 0:
        return 0, 0
    start, n = int(where[0]), where.numel()
    if int(where[-1]) != start + n - 1:
        raise ValueError("a prompt holds several images (<|image_pad|> runs): this family takes one image per sample")
    return start, n


def mrope_positions(length: int, start: int, grid_hw: tuple[int, int] | None) -> torch.Tensor:
    """[3, length] M-RoPE positions of one prompt whose image (merged grid h x w, or None) starts at `start`."""
    positions = torch.arange(length).expand(3, -1).clone()
    if grid_hw is not None:
        h, w = grid_hw
        j = torch.arange(h * w)
        positions[:, start:start + h * w] = start + torch.stack([torch.zeros_like(j), j // w, j % w])
        positions[:, start + h * w:] += max(h, w) - h * w
    return positions


def chat_prompt_ids(tokenizer, content: list[dict], image_tokens: int = 0) -> torch.Tensor:
    """Token ids of one user turn in the chat template, the assistant turn opened; `content` holds text parts and at
    most one `{"type": "image"}`, whose `<|image_pad|>` is expanded to `image_tokens` (its merged-token count)."""
    messages = [{"role": "user", "content": content}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    text = text.replace("<|image_pad|>", "<|image_pad|>" * image_tokens, 1)
    return torch.tensor(tokenizer(text).input_ids)


def build_inputs(tokenizer, image_processor, questions: list[str], images: list) -> tuple:
    """Chat prompts (one image, then the question, per sample) -> right-padded input_ids, attention_mask and the
    image processor's output, each `<|image_pad|>` expanded to its image's merged-token count."""
    processed = image_processor(images=images, return_tensors="pt")
    merge = image_processor.merge_size ** 2
    rows = [chat_prompt_ids(tokenizer, [{"type": "image"}, {"type": "text", "text": q}], int(grid.prod() // merge))
            for q, grid in zip(questions, processed["image_grid_thw"])]
    ids = pad_rows(rows, tokenizer.pad_token_id)
    mask = pad_rows([torch.ones(len(r), dtype=torch.long) for r in rows], 0)
    return ids, mask, processed


@dataclass
class QwenDecoderLayerView:
    """One Qwen2.5-VL decoder layer as the LLM-stage scorers see it (visiondrop.layers.DecoderLayerView)."""

    layer: Qwen2_5_VLDecoderLayer
    index: int

    @property
    def head_dim(self) -> int:
        return self.layer.self_attn.head_dim

    def normed(self, hidden: torch.Tensor, fused: bool = False) -> torch.Tensor:
        """The input RMSNorm (`fused` is accepted for the protocol; this family has no fused kernel)."""
        return self.layer.input_layernorm(hidden)

    def queries(self, normed: torch.Tensor) -> torch.Tensor:
        return self.layer.self_attn.q_proj(normed).unflatten(-1, (-1, self.head_dim))

    def keys(self, normed: torch.Tensor) -> torch.Tensor:
        return self.layer.self_attn.k_proj(normed).unflatten(-1, (-1, self.head_dim))

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, fused: bool = False) -> torch.Tensor:
        """x [..., T, H, d] rotated by per-token tables [..., T, d] (sections already merged, see `method_rope`)."""
        cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
        return x * cos + rotate_half(x) * sin


def method_rope(model: QwenVLForCausalLM, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cos / sin [B, T, d] of a batch's M-RoPE positions, the three sections merged (transformers'
    rotary embedding does it), so pruning methods rotate queries and keys as for any 1-D RoPE."""
    return model.model.rotary_emb(batch.hidden, batch.positions)


def load_qwen_model(model_path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float16,
                    attn_implementation: str = "sdpa", min_pixels: int | None = None, max_pixels: int | None = None):
    """Load a Qwen2.5-VL checkpoint directory (transformers' hub layout: `visual.*`, `model.*`, `lm_head.*`).
    Returns (tokenizer, model, image_processor, context_len) as `load_pretrained_model`; `min_pixels` /
    `max_pixels` bound the image processor's dynamic resolution (None: the checkpoint's)."""
    root = Path(model_path)
    config = Qwen2_5_VLConfig.from_pretrained(root)
    for part in (config.text_config, config.vision_config):
        part._attn_implementation = attn_implementation
    state, sources = read_weights(root)
    state = {("model." + k if k.startswith("visual.") else k): v for k, v in state.items()}
    if config.tie_word_embeddings:
        state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])
    with torch.device("meta"):
        model = QwenVLForCausalLM(config)
    assign_weights(model, state, sources)
    decoder = model.model
    decoder.rotary_emb = decoder.visual.rotary_pos_emb = None  # buffers not in the checkpoint: rebuilt in fp32
    model.to(device=device, dtype=dtype)
    decoder.rotary_emb = Qwen2_5_VLRotaryEmbedding(config.text_config).to(device)
    decoder.visual.rotary_pos_emb = Qwen2_5_VLVisionRotaryEmbedding(config.vision_config).to(device)
    bounds = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(root, **bounds)
    return (AutoTokenizer.from_pretrained(root), model.eval(), image_processor,
            config.text_config.max_position_embeddings)
