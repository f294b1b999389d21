"""Differences between the supported transformers 5.x releases, decided once from the installed version."""

from __future__ import annotations

import importlib.util
import inspect

from transformers.models.llama.modeling_llama import LlamaDecoderLayer


def image_processor_class() -> type:
    """CLIP's image processor class that builds without a warning: the PIL one where torchvision is absent."""
    if importlib.util.find_spec("torchvision") is None:
        from transformers import CLIPImageProcessorPil

        return CLIPImageProcessorPil
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor


def layer_cache_kwarg() -> str:
    """The keyword under which the installed LlamaDecoderLayer takes the KV cache: `cache` where it replaced the
    deprecated `past_key_values` (transformers 5.2x), else `past_key_values`."""
    return "cache" if "cache" in inspect.signature(LlamaDecoderLayer.forward).parameters else "past_key_values"


LAYER_CACHE_KWARG = layer_cache_kwarg()
