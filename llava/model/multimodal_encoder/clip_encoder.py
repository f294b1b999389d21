"""CLIP vision tower: runs CLIP to the selected layer and returns patch (or CLS + patch) features."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel
from transformers.utils import logging as hf_logging

from visiondrop.graphs import GraphCache
from visiondrop.reduction import UnitTokens


def selected_layer_index(num_layers: int, select_layer: int) -> int:
    """Index into `hidden_states` (0 = embeddings) of a tower's selected feature: LLaVA's -2 = output of the
    second-last layer; also the number of encoder layers that must run to produce it."""
    n = num_layers + 1
    index = select_layer if select_layer >= 0 else n + select_layer
    if not 1 <= index < n:
        raise ValueError(f"mm_vision_select_layer={select_layer} is outside a {num_layers}-layer tower")
    return index


class CLIPLayerView:
    """A CLIPEncoderLayer as encoder-stage methods read it (visiondrop.layers.TowerLayerView)."""

    has_cls = True

    def __init__(self, layer: nn.Module):
        self.layer = layer
        self.head_dim = layer.self_attn.head_dim

    def cls_attention(self, layer_input: torch.Tensor,
                      fp32_softmax: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The [CLS] query's attention probabilities per head [n, H, T] over the layer's input [n, T, C] (softmax in
        fp32, cast back, as CLIP's eager path; `fp32_softmax=False`: in the input's dtype, as the VisionZip /
        VisPruner releases' attention) and the raw keys [n, T, H, d]."""
        attn = self.layer.self_attn
        z = self.layer.layer_norm1(layer_input)
        n, t, _ = z.shape
        q = attn.q_proj(z[:, :1]).view(n, 1, attn.num_heads, self.head_dim)
        k = attn.k_proj(z).view(n, t, attn.num_heads, self.head_dim)
        logits = torch.einsum("nqhd,nkhd->nhk", q, k) * attn.scale
        probs = logits.float().softmax(dim=-1).to(z.dtype) if fp32_softmax else logits.softmax(dim=-1)
        return probs, k


class CLIPVisionTower(nn.Module):
    """Wraps transformers' CLIPVisionModel as LLaVA does (`mm_vision_select_layer`, `..._select_feature`).

    `encode` returns the units' tokens (`UnitTokens`: features [n, T, C] and `origin` [n, T], the tower token each
    output token stands for, -1 for CLS, patches 0..P-1). Pruning-aware subclasses override `select` to reduce them.
    Inside
    `graphed(True)` the CLIP layers of a call with at most `graph_max_tokens` tower tokens (images x tokens)
    replay from a CUDA graph per input shape (captured on the second call of a shape); `select` runs outside it.
    """

    graph_max_tokens = 4096

    def __init__(self, vision_tower: str, select_layer: int = -2, select_feature: str = "patch",
                 config: CLIPVisionConfig | None = None):
        super().__init__()
        if select_feature not in ("patch", "cls_patch"):
            raise ValueError(f"mm_vision_select_feature={select_feature!r}: expected 'patch' or 'cls_patch'")
        self.vision_tower_name = vision_tower
        self.select_layer = select_layer
        self.select_feature = select_feature
        # Built from a config (weights come from a checkpoint) or loaded from a directory / hub name.
        self.vision_tower = CLIPVisionModel(config) if config is not None else load_clip(vision_tower)
        self.vision_tower.requires_grad_(False)
        self.graphs = GraphCache(capacity=4, min_uses=2)
        self.replay_graphs = False

    @contextmanager
    def graphed(self, enabled: bool = True) -> Iterator[None]:
        """While open, `encode` replays the CLIP layers from CUDA graphs where they apply (if `enabled`)."""
        previous, self.replay_graphs = self.replay_graphs, enabled
        try:
            yield
        finally:
            self.replay_graphs = previous

    @property
    def config(self) -> CLIPVisionConfig:
        return self.vision_tower.config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_patches(self) -> int:
        return (self.config.image_size // self.config.patch_size) ** 2

    @property
    def reduces_tokens(self) -> bool:
        """True when `select` returns a reduced token set (encoder-stage pruning); the plain tower never does."""
        return False

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_tower.embeddings.patch_embedding.weight.dtype

    def _layer_index(self) -> int:
        return selected_layer_index(self.config.num_hidden_layers, self.select_layer)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> UnitTokens:
        """[n, 3, H, W] pixels -> the tokens of each of the n units (images / crops)."""
        index = self._layer_index()
        pixels = images.to(self.dtype)
        small = pixels.shape[0] * (self.num_patches + 1) <= self.graph_max_tokens
        if self.replay_graphs and pixels.is_cuda and small:
            key = (tuple(pixels.shape), pixels.dtype, index)
            layer_input, features = self.graphs.run(key, self._selected_states, pixels)
        else:
            layer_input, features = self._selected_states(pixels)
        return self.select(layer_input, features, self.vision_tower.encoder.layers[index - 1])

    def _selected_states(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The selected layer's input and output hidden states [n, T, C]."""
        out = self.vision_tower(pixels, output_hidden_states=True)
        index = self._layer_index()
        return out.hidden_states[index - 1], out.hidden_states[index]

    def select(self, layer_input: torch.Tensor, features: torch.Tensor, layer: nn.Module) -> UnitTokens:
        """Choose the output tokens from the selected layer's output (its input and module are for scorers)."""
        origin = torch.arange(-1, features.shape[1] - 1, device=features.device).expand(features.shape[0], -1)
        if self.select_feature == "patch":
            features, origin = features[:, 1:], origin[:, 1:]
        return UnitTokens(features, origin, dominant=features.shape[1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images).features


def load_clip(name_or_path: str) -> CLIPVisionModel:
    """Load the vision half of a CLIP checkpoint (local directory, or a hub name where a hub is reachable)."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a full CLIPModel directory has text weights we do not need
    try:
        return CLIPVisionModel.from_pretrained(name_or_path)
    except OSError as err:
        where = "directory" if Path(name_or_path).exists() else "name"
        raise FileNotFoundError(
            f"vision tower {where} {name_or_path!r} could not be loaded ({err.__class__.__name__}). Put a CLIP "
            "checkpoint (e.g. openai/clip-vit-large-patch14-336: config.json + weights) in a local directory and "
            "pass it with --vision-tower DIR (or set mm_vision_tower in the model's config.json)."
        ) from err
    finally:
        hf_logging.set_verbosity(verbosity)
