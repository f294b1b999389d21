"""A tiny random Qwen2.5-VL checkpoint in the original layout, created once and cached next to the tiny LLaVA ones.

It keeps the structure of Qwen2.5-VL-7B (28 GQA decoder layers with M-RoPE sections in the 16:24:24 ratio, a
32-block vision transformer whose blocks 7 / 15 / 23 / 31 attend over the whole image and the others within
112-px windows, the 2x2 PatchMerger, the processor's dynamic resolution) with tiny widths and a byte-level
tokenizer. Everything is written by transformers' own classes (`save_pretrained`), so the directory is what
transformers itself loads. Weights are random: outputs are not answers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer, Qwen2VLImageProcessorPil

from llava.model.tiny import build_once, default_cache_dir

TINY_QWEN_VERSION = 1
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")
TINY_QWEN_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=28, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
                      rope_parameters=dict(rope_type="default", rope_theta=1000000.0, mrope_section=[2, 3, 3]))
TINY_QWEN_VISION = dict(depth=32, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                        spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                        fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2)
# The processor's pixel bounds: the real default floor, a ceiling small enough for CPU tests.
TINY_MIN_PIXELS, TINY_MAX_PIXELS = 56 * 56, 28 * 28 * 256
# A chat template in the Qwen2.5-VL layout: a default system turn, images as vision_start / image_pad / vision_end.
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_qwen_path(cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Return the tiny Qwen2.5-VL checkpoint directory, creating it on first use."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    return build_once(root / f"tiny-qwen2.5-vl-v{TINY_QWEN_VERSION}", lambda out: _write_tiny_qwen(out, seed))


def tiny_qwen_processors(min_pixels: int = TINY_MIN_PIXELS, max_pixels: int = TINY_MAX_PIXELS
                         ) -> tuple[Qwen2Tokenizer, Qwen2VLImageProcessorPil]:
    """The tiny checkpoint's tokenizer (byte-level BPE without merges, Qwen's special tokens, the chat template)
    and image processor bounded by `min_pixels` / `max_pixels`. (transformers' Qwen2_5_VLProcessor needs
    torchvision for its video part: the two are saved and loaded on their own.)"""
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], errors="replace", model_max_length=4096)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    tokenizer.add_tokens(list(SPECIAL_TOKENS[:1]), special_tokens=True)
    tokenizer.pad_token = tokenizer.eos_token = "<|endoftext|>"
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer, Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)


def qwen_checkpoint_config(text: dict, vision: dict, tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLConfig:
    """A Qwen2.5-VL config of these text / vision fields whose special token ids are the tokenizer's (`text`
    may set its own vocab_size, at least the tokenizer's)."""
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in SPECIAL_TOKENS}
    text = {"vocab_size": len(tokenizer), **text, "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"]}
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=dict(vision, out_hidden_size=text["hidden_size"]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])


def save_qwen_checkpoint(out: Path, model: Qwen2_5_VLForConditionalGeneration, tokenizer: Qwen2Tokenizer,
                         image_processor: Qwen2VLImageProcessorPil, note: str) -> None:
    """Write a Qwen2.5-VL checkpoint directory the way transformers does (weights, config, tokenizer, image
    processor) with a README line `note`."""
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    (out / "README.md").write_text(note + "\n")


def _write_tiny_qwen(out: Path, seed: int) -> None:
    torch.manual_seed(seed)
    tok, image_processor = tiny_qwen_processors()
    model = Qwen2_5_VLForConditionalGeneration(qwen_checkpoint_config(TINY_QWEN_TEXT, TINY_QWEN_VISION, tok))
    with torch.no_grad():  # spread the default 0.02 init so that random tokens give varied, separable logits
        model.model.language_model.embed_tokens.weight.normal_(0.0, 1.0)
        model.lm_head.weight.normal_(0.0, 0.5)
    save_qwen_checkpoint(out, model, tok, image_processor,
                         "Tiny random Qwen2.5-VL-shaped checkpoint for tests. Not a real model.")
