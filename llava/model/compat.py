"""Differences between the supported transformers 5.x releases, decided once from the installed version."""

from __future__ import annotations

import importlib.util


def image_processor_class() -> type:
    """CLIP's image processor class that builds without a warning: the PIL one where torchvision is absent."""
    if importlib.util.find_spec("torchvision") is None:
        from transformers import CLIPImageProcessorPil

        return CLIPImageProcessorPil
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor
