"""The family prompt: the drivers' queries (a user turn with `<image>` placeholders, the task's instruction already
in its text) -> the model's padded input ids, image inputs and stop token. The one place where the prompt of a
Qwen2.5-VL checkpoint differs from LLaVA's (docs/qwen.md, "Running the benchmarks on Qwen2.5-VL"):

* LLaVA: the conv template (`--conv-mode`) around the query, `<image>` tokenized as one placeholder id that the
  model replaces by the image's features (`tokenizer_image_token`); pixels by LLaVA's preprocessing (pad / anyres);
  generation stops at the tokenizer's EOS.
* Qwen2.5-VL: the checkpoint's own chat template (its default system turn, `<|im_start|>user ... <|im_end|>`, the
  assistant turn opened); the image is one `<|vision_start|><|image_pad|><|vision_end|>` at the placeholder's place
  (the drivers put it first, where Qwen's processor puts it) with the newline LLaVA writes after `<image>` dropped,
  its pad expanded to the image's merged-token count; pixels by the checkpoint's image processor (dynamic
  resolution); generation stops at the end of the assistant turn (`<|im_end|>`, the text config's EOS).
  `--conv-mode` is not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.model.family import LLAVA_FAMILY, QWEN_FAMILY, model_family

CHAT_TEMPLATE = "chat_template"  # the prompt template recorded for a Qwen2.5-VL run (in place of a conv mode)


@dataclass
class PromptBatch:
    """What `model.generate` takes for a batch of queries, and the token that ends an answer."""

    input_ids: Any
    attention_mask: Any
    images: Any
    image_sizes: list | None
    stop_token_id: int
    pad_token_id: int


def prompt_template(family: str, conv_mode: str) -> str:
    """The prompt template a run of this family uses: the conv mode (LLaVA) or the checkpoint's chat template."""
    return CHAT_TEMPLATE if family == QWEN_FAMILY else conv_mode


def prompt_batch(queries: list[str], pil, tok, model, image_processor, conv_mode: str) -> PromptBatch:
    """The model family's prompts of `queries` (one PIL image per `<image>`, in order; or preprocessed clips),
    right-padded with the tokenizer's pad id, on the model's device."""
    import torch

    from llava.model.sequence import pad_rows

    build = {LLAVA_FAMILY: llava_prompts, QWEN_FAMILY: qwen_prompts}[model_family(model.unpruned_model)]
    rows, images, sizes, stop = build(queries, pil, tok, model, image_processor, conv_mode)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = pad_rows(rows, pad).to(model.device)
    mask = pad_rows([torch.ones(len(r), dtype=torch.long) for r in rows], 0).to(model.device)
    return PromptBatch(ids, mask, images, sizes, stop, pad)


def llava_prompts(queries: list[str], pil, tok, model, image_processor, conv_mode: str) -> tuple:
    """LLaVA: the conv template, `<image>` as the placeholder id, LLaVA's preprocessing."""
    from llava.conversation import build_prompt
    from llava.mm_utils import tokenizer_image_token

    rows = [tokenizer_image_token(build_prompt(query, conv_mode), tok, return_tensors="pt") for query in queries]
    return (rows, *pixel_inputs(pil, model, image_processor), tok.eos_token_id)


def chat_content(query: str) -> list[dict]:
    """A query as chat content parts: text, and the image at its placeholder without the newline after it."""
    before, placeholder, after = query.partition(DEFAULT_IMAGE_TOKEN)
    if DEFAULT_IMAGE_TOKEN in after:
        from llava.eval.questions import EvalInputError

        raise EvalInputError("a query holds several images: Qwen2.5-VL takes one image per sample here")
    parts = [{"type": "text", "text": before}] if before else []
    if placeholder:
        parts.append({"type": "image"})
        after = after.removeprefix("\n")
    return parts + ([{"type": "text", "text": after}] if after else [])


def qwen_prompts(queries: list[str], pil: list, tok, model, image_processor, conv_mode: str) -> tuple:
    """Qwen2.5-VL: the checkpoint's chat template, the image processor's dynamic resolution (module docstring)."""
    from llava.model.language_model.qwen2_5_vl import chat_prompt_ids

    processed = image_processor(images=pil, return_tensors="pt") if pil else None
    tokens = iter((processed["image_grid_thw"].prod(-1) // image_processor.merge_size ** 2).tolist() if pil else [])
    rows = []
    for query in queries:
        content = chat_content(query)
        rows.append(chat_prompt_ids(tok, content, next(tokens) if {"type": "image"} in content else 0))
    return rows, processed, None, model.config.eos_token_id


def pixel_inputs(pil: list, model, image_processor) -> tuple:
    """(pixel tensor(s) on the model's device and dtype, original sizes) of PIL images; (None, None) for none."""
    from llava.mm_utils import process_images

    if not isinstance(pil, list):  # clips already preprocessed to [n, 3, T, H, W] (llava.eval.model_video_qa)
        return pil.to(device=model.device, dtype=model.dtype), None
    if not pil:
        return None, None
    images = process_images(pil, image_processor, model.config)
    cast = {"device": model.device, "dtype": model.dtype}  # fp16 pixels as the reference drivers pass them
    images = [im.to(**cast) for im in images] if isinstance(images, list) else images.to(**cast)
    return images, [im.size for im in pil]
