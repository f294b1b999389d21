"""load_pretrained_model on checkpoints laid out as the original releases: what it returns and what it accepts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TEST_DTYPE
from PIL import Image

from llava.mm_utils import clip_preprocess
from llava.model.builder import load_pretrained_model


@pytest.fixture(scope="module")
def loaded(tiny_path):
    return load_pretrained_model(str(tiny_path), None, "llava-v1.5-tiny", dtype=TEST_DTYPE)


def test_returns_the_official_tuple_with_a_clip_image_processor(loaded):
    tokenizer, model, image_processor, context_len = loaded
    assert context_len == model.config.max_position_embeddings
    assert model.get_vision_tower().image_processor is image_processor
    assert image_processor.crop_size["height"] == model.get_vision_tower().config.image_size
    image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (300, 500, 3), dtype=np.uint8))
    pixels = image_processor.preprocess(image, return_tensors="pt")["pixel_values"]
    assert torch.equal(pixels, clip_preprocess(image, 336))
