"""Image loading, CLIP preprocessing, anyres tiling and `<image>` prompt tokenization (docs/pipeline.md,
'Tokenization' and 'Preprocessing')."""

from __future__ import annotations

import ast
import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX

OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

Resolution = tuple[int, int]


def load_image(path: str | Path, convert_rgb: bool = True) -> Image.Image:
    """Open and fully decode an image; raise FileNotFoundError / ValueError naming the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Image file not found: '{path}'. Check the image folder argument and the 'image' field of "
            "the question file (paths are relative to the image folder), or download/extract the images."
        )
    try:
        image = Image.open(path)
        image.load()  # force a full decode: Image.open only reads the header
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ... on bad data
        raise ValueError(
            f"Cannot decode image file '{path}' ({type(exc).__name__}: {exc}). The file is corrupt, "
            "truncated or not an image; re-download or re-extract it."
        ) from exc
    return image.convert("RGB") if convert_rgb else image


def _canvas(mode: str, size: Resolution, color: tuple[int, ...]) -> Image.Image:
    """Create a blank canvas in `mode`; colours that Pillow rejects for the mode are converted from RGB."""
    try:
        return Image.new(mode, size, color)
    except TypeError:  # e.g. "L"/"LA"/"I;16": recent Pillow refuses a 3-tuple where the reference expected it
        fill = Image.new("RGB", (1, 1), color[:3]).convert(mode).getpixel((0, 0))
        return Image.new(mode, size, fill)


def expand2square(pil_img: Image.Image, background_color: tuple[int, ...]) -> Image.Image:
    """Pad to a centred square of side max(w, h) in the input's own mode (LLaVA-1.5 `pad`)."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    if width > height:
        result = _canvas(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
    else:
        result = _canvas(pil_img.mode, (height, height), background_color)
        result.paste(pil_img, ((height - width) // 2, 0))
    return result


def _clip_one(image: Image.Image, image_size: int, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """CLIP-process one image into a float32 [3, S, S] tensor."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short != image_size:
        new_long = int(image_size * long / short)
        new_w, new_h = (image_size, new_long) if width <= height else (new_long, image_size)
        image = image.resize((new_w, new_h), resample=Image.Resampling.BICUBIC, reducing_gap=None)
    arr = np.asarray(image)
    height, width = arr.shape[:2]
    top, left = (height - image_size) // 2, (width - image_size) // 2
    if top < 0 or left < 0:
        raise ValueError(f"image of size {width}x{height} is smaller than the crop {image_size}")
    arr = arr[top : top + image_size, left : left + image_size]
    arr = (arr.astype(np.float64) * (1 / 255)).astype(np.float32)
    arr = (arr - mean) / std
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def clip_preprocess(
    images: Image.Image | Sequence[Image.Image],
    image_size: int = 336,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> torch.Tensor:
    """RGB, bicubic shortest-edge resize, centre crop, rescale 1/255, normalize -> float32 [n, 3, S, S]."""
    if isinstance(images, Image.Image):
        images = [images]
    mean_arr, std_arr = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    return torch.stack([_clip_one(img, image_size, mean_arr, std_arr) for img in images], dim=0)


def _parse_pinpoints(grid_pinpoints: str | Sequence[Sequence[int]]) -> list[Resolution]:
    """Accept the config's list of [W, H] pairs or its string form."""
    if isinstance(grid_pinpoints, str):
        grid_pinpoints = ast.literal_eval(grid_pinpoints)
    return [(int(w), int(h)) for w, h in grid_pinpoints]


def select_best_resolution(
    original_size: Resolution, possible_resolutions: str | Sequence[Sequence[int]]
) -> Resolution:
    """Pick the (W, H) that keeps most effective pixels, then wastes least; first wins exact ties."""
    original_width, original_height = original_size
    best_fit: Resolution | None = None
    max_effective, min_wasted = 0, float("inf")
    for width, height in _parse_pinpoints(possible_resolutions):
        scale = min(width / original_width, height / original_height)
        down_w, down_h = int(original_width * scale), int(original_height * scale)
        effective = min(down_w * down_h, original_width * original_height)
        wasted = width * height - effective
        if effective > max_effective or (effective == max_effective and wasted < min_wasted):
            max_effective, min_wasted, best_fit = effective, wasted, (width, height)
    if best_fit is None:
        raise ValueError("possible_resolutions is empty")
    return best_fit


def resize_and_pad_image(image: Image.Image, target_resolution: Resolution) -> Image.Image:
    """Resize keeping aspect (bicubic) to fit `target_resolution`, centred on a black RGB canvas."""
    original_width, original_height = image.size
    target_width, target_height = target_resolution
    scale_w, scale_h = target_width / original_width, target_height / original_height
    if scale_w < scale_h:
        new_width, new_height = target_width, min(math.ceil(original_height * scale_w), target_height)
    else:
        new_width, new_height = min(math.ceil(original_width * scale_h), target_width), target_height
    resized = image.resize((new_width, new_height), resample=Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (target_width, target_height), (0, 0, 0))
    canvas.paste(resized, ((target_width - new_width) // 2, (target_height - new_height) // 2))
    return canvas


def divide_to_patches(image: Image.Image, patch_size: int) -> list[Image.Image]:
    """Cut into patch_size squares, row-major (outer y, inner x)."""
    width, height = image.size
    return [
        image.crop((x, y, x + patch_size, y + patch_size))
        for y in range(0, height, patch_size)
        for x in range(0, width, patch_size)
    ]


def get_anyres_image_grid_shape(
    image_size: Resolution, grid_pinpoints: str | Sequence[Sequence[int]], patch_size: int
) -> tuple[int, int]:
    """Return the anyres tile grid (g_w, g_h) for an image of size (w, h)."""
    width, height = select_best_resolution(image_size, _parse_pinpoints(grid_pinpoints))
    return width // patch_size, height // patch_size


def process_anyres_image(
    image: Image.Image,
    grid_pinpoints: str | Sequence[Sequence[int]],
    image_size: int = 336,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> torch.Tensor:
    """Base image (plain squash) followed by row-major tiles, CLIP-processed -> [1 + g_w*g_h, 3, S, S]."""
    best = select_best_resolution(image.size, _parse_pinpoints(grid_pinpoints))
    patches = divide_to_patches(resize_and_pad_image(image, best), image_size)
    base = image.resize((image_size, image_size), resample=Image.Resampling.BICUBIC)
    return clip_preprocess([base, *patches], image_size, mean, std)


def _unpad_bounds(original_size: Resolution, current_hw: tuple[int, int]) -> tuple[str, int, int]:
    """Return ("rows" | "cols", start, stop) of the feature-map region kept by `unpad_image`."""
    original_width, original_height = original_size
    current_height, current_width = current_hw
    if original_width / original_height > current_width / current_height:
        new_height = int(original_height * (current_width / original_width))
        padding = (current_height - new_height) // 2
        return "rows", padding, current_height - padding
    new_width = int(original_width * (current_height / original_height))
    padding = (current_width - new_width) // 2
    return "cols", padding, current_width - padding


def unpad_image(tensor: torch.Tensor, original_size: Resolution) -> torch.Tensor:
    """Remove the letterbox padding of a [C, H, W] feature map, given the original image (w, h)."""
    axis, start, stop = _unpad_bounds(original_size, (tensor.shape[1], tensor.shape[2]))
    return tensor[:, start:stop, :] if axis == "rows" else tensor[:, :, start:stop]


def anyres_token_count(
    image_size_wh: Resolution,
    grid_pinpoints: str | Sequence[Sequence[int]],
    patch_grid: int = 24,
    vision_size: int = 336,
) -> int:
    """LLM tokens of the stock `spatial_unpad` merge: base grid**2 + kept rows * (kept cols + one newline)."""
    grid_w, grid_h = get_anyres_image_grid_shape(image_size_wh, grid_pinpoints, vision_size)
    height, width = grid_h * patch_grid, grid_w * patch_grid
    axis, start, stop = _unpad_bounds(image_size_wh, (height, width))
    rows, cols = (stop - start, width) if axis == "rows" else (height, stop - start)
    return patch_grid * patch_grid + rows * (cols + 1)


def preprocess_images(
    images: Sequence[Image.Image],
    image_aspect_ratio: str | None,
    image_size: int = 336,
    grid_pinpoints: str | Sequence[Sequence[int]] | None = None,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> torch.Tensor | list[torch.Tensor]:
    """`pad` / plain -> [n, 3, S, S]; `anyres` -> list of per-image [1 + g, 3, S, S] tensors."""
    if image_aspect_ratio == "pad":
        background = tuple(int(x * 255) for x in mean)
        squares = [expand2square(img, background) for img in images]
        return torch.cat([clip_preprocess(sq, image_size, mean, std) for sq in squares], dim=0)
    if image_aspect_ratio == "anyres":
        if grid_pinpoints is None:
            raise ValueError("image_aspect_ratio 'anyres' needs grid_pinpoints (config.image_grid_pinpoints)")
        return [process_anyres_image(img, grid_pinpoints, image_size, mean, std) for img in images]
    return clip_preprocess(list(images), image_size, mean, std)


def processor_geometry(image_processor: Any) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(crop size, mean, std) of a CLIP image processor."""
    crop = image_processor.crop_size
    size = crop if isinstance(crop, int) else int(crop["height"])  # a dict or transformers' SizeDict
    return size, tuple(image_processor.image_mean), tuple(image_processor.image_std)


def process_images(images: Sequence[Image.Image], image_processor: Any, model_cfg: Any) -> torch.Tensor | list:
    """LLaVA's `process_images`: the model config's `image_aspect_ratio` (pad / anyres / plain) with the
    processor's crop size and statistics; anyres stacks of one shape come back as one [n, 1 + g, 3, S, S] tensor."""
    size, mean, std = processor_geometry(image_processor)
    out = preprocess_images(images, getattr(model_cfg, "image_aspect_ratio", None), size,
                            getattr(model_cfg, "image_grid_pinpoints", None), mean, std)
    if isinstance(out, list) and all(x.shape == out[0].shape for x in out):
        return torch.stack(out, dim=0)
    return out


def load_image_from_base64(image: str) -> Image.Image:
    """LLaVA's `load_image_from_base64`: the decoded image in its own mode (not RGB-converted)."""
    return Image.open(io.BytesIO(base64.b64decode(image)))


def get_model_name_from_path(model_path: str) -> str:
    """LLaVA's model name: the last folder name, `parent_checkpoint-N` for a training checkpoint folder."""
    parts = str(model_path).strip("/").split("/")
    return f"{parts[-2]}_{parts[-1]}" if parts[-1].startswith("checkpoint-") and len(parts) > 1 else parts[-1]


def tokenizer_image_token(
    prompt: str,
    tokenizer: Any,
    image_token_index: int = IMAGE_TOKEN_INDEX,
    return_tensors: str | None = None,
) -> list[int] | torch.Tensor:
    """Tokenize each `<image>`-separated chunk alone, keep one BOS, join chunks with `image_token_index`."""
    chunks = [list(tokenizer(chunk).input_ids) for chunk in prompt.split(DEFAULT_IMAGE_TOKEN)]
    bos = tokenizer.bos_token_id
    strip = bool(chunks[0]) and bos is not None and chunks[0][0] == bos
    input_ids: list[int] = [bos] if strip else []
    for i, chunk in enumerate(chunks):
        if i > 0:
            input_ids.append(image_token_index)
        input_ids.extend(chunk[1:] if strip and chunk and chunk[0] == bos else chunk)
    if return_tensors is None:
        return input_ids
    if return_tensors == "pt":
        return torch.tensor(input_ids, dtype=torch.long)
    raise ValueError(f"Unsupported tensor type: {return_tensors!r} (use None or 'pt')")
