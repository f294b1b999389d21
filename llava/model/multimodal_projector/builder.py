"""Projector from vision features to the LLM width: `linear`, `mlpNx_gelu`, `identity`."""

import re

from torch import nn


def build_vision_projector(config) -> nn.Module:
    """Build the projector named by `config.mm_projector_type` (state-dict keys `0`, `2`, ... as LLaVA)."""
    kind = getattr(config, "mm_projector_type", "linear")
    if kind == "linear":
        return nn.Linear(config.mm_hidden_size, config.hidden_size)
    if kind == "identity":
        return nn.Identity()
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if match is None:
        raise ValueError(f"config.mm_projector_type={kind!r}: expected 'linear', 'identity' or 'mlp<N>x_gelu'")
    modules: list[nn.Module] = [nn.Linear(config.mm_hidden_size, config.hidden_size)]
    for _ in range(int(match.group(1)) - 1):
        modules += [nn.GELU(), nn.Linear(config.hidden_size, config.hidden_size)]
    return nn.Sequential(*modules)
