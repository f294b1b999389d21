"""Unpruned LLaVA-1.5 and LLaVA-NeXT logits equal transformers' own Llava / LlavaNext models on the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_close, encode_prompt
from PIL import Image
from transformers import (
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
)

from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import anyres_token_count, preprocess_images
from llava.model.builder import load_pretrained_model
from llava.model.tiny import tiny_llava_next_path

# our key prefix -> transformers' (5.x: CLIPVisionModel's keys sit directly under the tower)
KEY_MAP = {"model.vision_tower.vision_tower.": "model.vision_tower.", "model.mm_projector.0.":
           "model.multi_modal_projector.linear_1.", "model.mm_projector.2.": "model.multi_modal_projector.linear_2.",
           "model.embed_tokens.": "model.language_model.embed_tokens.", "model.layers.":
           "model.language_model.layers.", "model.norm.": "model.language_model.norm."}


def transformers_twin(model, config_cls, model_cls, **fields):
    """transformers' model of the same config, holding `model`'s weights (tower included)."""
    ours = model.config.to_dict()
    text = LlamaConfig(**{k: v for k, v in ours.items() if not k.startswith(("mm_", "image_", "vision_"))})
    image_token = model.config.vocab_size - 1
    config = config_cls(vision_config=model.get_vision_tower().config.to_dict(), text_config=text.to_dict(),
                        image_token_index=image_token, vision_feature_layer=model.config.mm_vision_select_layer,
                        vision_feature_select_strategy="default", projector_hidden_act="gelu", **fields)
    config._attn_implementation = "sdpa"
    twin = model_cls(config).eval()
    state = {}
    for key, value in model.state_dict().items():
        old = next((p for p in KEY_MAP if key.startswith(p)), "")
        state[KEY_MAP.get(old, "") + key[len(old):]] = value
    twin.load_state_dict(state, strict=True)
    return twin, image_token


def expand_image_token(ids: torch.Tensor, image_token: int, n: int) -> torch.Tensor:
    """transformers' input convention: the one placeholder repeated once per image feature."""
    at = int((ids == IMAGE_TOKEN_INDEX).nonzero())
    assert image_token not in ids.tolist()
    return torch.cat([ids[:at], torch.full((n,), image_token), ids[at + 1:]])[None]


def picture(width: int, height: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(7).randint(0, 256, (height, width, 3), dtype=np.uint8))


def test_llava15_logits_equal_transformers_llava(tiny_path):
    tokenizer, model, _, _ = load_pretrained_model(str(tiny_path), dtype=torch.float32)
    twin, image_token = transformers_twin(model, LlavaConfig, LlavaForConditionalGeneration)
    pixels = preprocess_images([picture(500, 300)], "pad", 336)
    ids = encode_prompt(tokenizer, "What is in the image?")
    ours = model(ids[None], images=pixels)
    with torch.no_grad():
        theirs = twin(input_ids=expand_image_token(ids, image_token, 576), pixel_values=pixels).logits
    assert ours.shape == theirs.shape
    assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [(500, 300), (300, 620)])  # anyres grids 2x1 and 1x2, letterboxed both ways
def test_next_logits_equal_transformers_llava_next(tiny_path, size):
    tokenizer, model, _, _ = load_pretrained_model(str(tiny_llava_next_path(tiny_path.parent)), dtype=torch.float32)
    assert model.config.mm_patch_merge_type == "spatial_unpad" and model.model.image_newline is not None
    pinpoints = model.config.image_grid_pinpoints
    twin, image_token = transformers_twin(model, LlavaNextConfig, LlavaNextForConditionalGeneration,
                                          image_grid_pinpoints=pinpoints)
    pixels = preprocess_images([picture(*size)], "anyres", 336, pinpoints)
    assert pixels[0].shape[0] == 3  # base image + two tiles
    ids = encode_prompt(tokenizer, "What is in the image?")
    ours = model(ids[None], images=pixels, image_sizes=[size])
    n = anyres_token_count(size, pinpoints)
    with torch.no_grad():
        theirs = twin(input_ids=expand_image_token(ids, image_token, n), pixel_values=pixels[0][None],
                      image_sizes=torch.tensor([size[::-1]])).logits
    assert ours.shape == theirs.shape == (1, len(ids) - 1 + n, model.config.vocab_size)
    assert_close(ours, theirs, atol=1e-5, rtol=0)
