"""The efficiency benchmark's Qwen2.5-VL batch (docs/efficiency.md, 'Qwen2.5-VL-7B'): one random-pixel 1344 x 1008
image per row and a chat-template prompt (the family's `build_inputs`) whose text is filled up to the requested
number of text tokens."""

from __future__ import annotations

import numpy as np
from PIL import Image

from llava.model.language_model.qwen2_5_vl import build_inputs

# The model table's nominal image (visiondrop/models.py): 96 x 72 patches, 1728 merged tokens under the real
# processor bounds.
QWEN_IMAGE_SIZE = (1344, 1008)  # (width, height)
LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz "))


def filler_question(tokenizer, n_tokens: int, seed: int = 0) -> str:
    """Random letters and spaces that the tokenizer splits into `n_tokens` tokens (chars appended one at a time
    until the count is reached; `qwen_inputs` checks the total)."""
    rng = np.random.default_rng(seed)
    text = ""
    while len(tokenizer(text, add_special_tokens=False).input_ids) < n_tokens:
        text += str(rng.choice(LETTERS[:-1] if not text or text[-1] == " " else LETTERS))
    return text


def qwen_inputs(model, tokenizer, image_processor, batch: int, text_tokens: int, seed: int = 0):
    """(input_ids [B, T], the image processor's output on the model's device): identical rows of `text_tokens`
    text tokens (chat template included) around one image's `<|image_pad|>` run. Refuses a count below the
    template's own tokens."""
    w, h = QWEN_IMAGE_SIZE
    image = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
    pad = model.vl_config.image_token_id
    ids = build_inputs(tokenizer, image_processor, [""], [image])[0]
    overhead = int((ids != pad).sum())
    if text_tokens < overhead:
        raise ValueError(f"--text-tokens {text_tokens}: Qwen2.5-VL's chat template alone takes {overhead} text tokens")
    question = filler_question(tokenizer, text_tokens - overhead, seed)
    ids, _, images = build_inputs(tokenizer, image_processor, [question] * batch, [image] * batch)
    if int((ids[0] != pad).sum()) != text_tokens:
        raise ValueError(f"the prompt has {int((ids[0] != pad).sum())} text tokens, not {text_tokens}")
    visual = model.model.visual
    images = {"pixel_values": images["pixel_values"].to(model.device, visual.dtype),
              "image_grid_thw": images["image_grid_thw"].to(model.device)}
    return ids.to(model.device), images
