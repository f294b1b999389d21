"""Image loading, CLIP preprocessing, pad and anyres helpers (docs/pipeline.md, 'Preprocessing')."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llava.mm_utils import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    anyres_token_count,
    clip_preprocess,
    divide_to_patches,
    expand2square,
    get_anyres_image_grid_shape,
    load_image,
    preprocess_images,
    process_anyres_image,
    resize_and_pad_image,
    select_best_resolution,
    unpad_image,
)

PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
FILL = (122, 116, 104)


def normalized(rgb: tuple[int, int, int]) -> torch.Tensor:
    """Expected CLIP value per channel of a constant colour."""
    triples = zip(rgb, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, strict=True)
    return torch.tensor([(c / 255 - m) / s for c, m, s in triples])


# ---- loading -----------------------------------------------------------------------------------------------


def test_load_image_ok(tmp_path: Path) -> None:
    path = tmp_path / "ok.png"
    Image.new("L", (5, 3), 7).save(path)
    assert load_image(path).mode == "RGB"
    assert load_image(path, convert_rgb=False).mode == "L"


def test_load_image_missing(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "missing.jpg"
    with pytest.raises(FileNotFoundError) as err:
        load_image(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("payload", [b"this is not a jpeg at all" * 10, None])
def test_load_image_corrupt(tmp_path: Path, payload: bytes | None) -> None:
    path = tmp_path / "bad.jpg"
    if payload is None:  # a real JPEG cut short: header decodes, pixel data does not
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        payload = path.read_bytes()[:300]
    path.write_bytes(payload)
    with pytest.raises(ValueError) as err:
        load_image(path)
    assert str(path) in str(err.value)


# ---- CLIP processor / pad ----------------------------------------------------------------------------------


def test_clip_constant_colour_and_shape() -> None:
    out = clip_preprocess(Image.new("RGB", (500, 400), (10, 200, 30)))
    assert out.shape == (1, 3, 336, 336) and out.dtype == torch.float32
    assert torch.allclose(out[0, :, 100, 100], normalized((10, 200, 30)), atol=1e-5)


def test_clip_center_crop_uses_floor() -> None:
    # no resize; left = (451 - 336) // 2 = 57 (rounding would give 58)
    arr = np.zeros((336, 451, 3), dtype=np.uint8)
    arr[:, 57] = 255
    out = clip_preprocess(Image.fromarray(arr))
    assert torch.allclose(out[0, :, 0, 0], normalized((255, 255, 255)), atol=1e-5)
    assert torch.allclose(out[0, :, 0, 1], normalized((0, 0, 0)), atol=1e-5)


def test_clip_matches_transformers_pil_backend() -> None:
    mod = pytest.importorskip("transformers.models.clip.image_processing_pil_clip")
    proc = mod.CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    rng = np.random.default_rng(0)
    for w, h in [(640, 480), (300, 500)]:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        ref = torch.as_tensor(np.asarray(proc(img, return_tensors="pt")["pixel_values"]))
        assert torch.equal(clip_preprocess(img), ref)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_expand2square_wide(mode: str) -> None:
    img = Image.new(mode, (40, 20), (255, 0, 0) if mode == "RGB" else (255, 0, 0, 255))
    sq = expand2square(img, FILL)
    assert sq.size == (40, 40) and sq.mode == mode
    assert sq.getpixel((0, 0))[:3] == FILL and sq.getpixel((0, 9))[:3] == FILL
    assert sq.getpixel((0, 10))[:3] == (255, 0, 0) and sq.getpixel((39, 29))[:3] == (255, 0, 0)
    assert sq.getpixel((0, 30))[:3] == FILL


def test_expand2square_tall_and_square() -> None:
    img = Image.new("RGB", (21, 40), (0, 255, 0))
    sq = expand2square(img, FILL)
    offset = (40 - 21) // 2  # 9
    assert sq.getpixel((offset - 1, 5)) == FILL and sq.getpixel((offset, 5)) == (0, 255, 0)
    assert sq.getpixel((offset + 20, 5)) == (0, 255, 0) and sq.getpixel((offset + 21, 5)) == FILL
    same = Image.new("RGB", (8, 8))
    assert expand2square(same, FILL) is same


def test_expand2square_grayscale_keeps_mode() -> None:
    sq = expand2square(Image.new("L", (10, 4), 255), FILL)
    assert sq.mode == "L" and sq.size == (10, 10) and sq.getpixel((0, 0)) != 255


def test_process_images_pad() -> None:
    imgs = [Image.new("RGB", (400, 200), (255, 255, 255)), Image.new("RGB", (100, 300), (0, 0, 0))]
    out = preprocess_images(imgs, "pad")
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 336, 336)
    assert torch.allclose(out[0, :, 0, 168], normalized(FILL), atol=1e-5)  # top band is the fill colour
    assert torch.allclose(out[0, :, 168, 168], normalized((255, 255, 255)), atol=1e-5)
    assert preprocess_images(imgs, None).shape == (2, 3, 336, 336)


# ---- anyres ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "best"),
    [
        ((672, 672), (672, 672)),
        ((640, 480), (672, 672)),
        ((480, 640), (672, 672)),
        ((1920, 1080), (672, 672)),
        ((336, 336), (336, 672)),  # tie on eff and waste with (672, 336): first wins
        ((1000, 200), (1008, 336)),
        ((200, 1000), (336, 1008)),
        ((600, 300), (672, 336)),
    ],
)
def test_select_best_resolution(size: tuple[int, int], best: tuple[int, int]) -> None:
    assert select_best_resolution(size, PINPOINTS) == best
    assert select_best_resolution(size, str(PINPOINTS)) == best


@pytest.mark.parametrize(
    ("size", "tokens"),
    [
        ((672, 672), 2928),
        ((640, 480), 2340),
        ((500, 375), 2340),
        ((1024, 768), 2340),
        ((480, 640), 2352),
        ((1920, 1080), 1948),
        ((336, 336), 1176),
        ((1000, 200), 1598),
    ],
)
def test_anyres_token_count_table(size: tuple[int, int], tokens: int) -> None:
    assert anyres_token_count(size, PINPOINTS) == tokens


def test_grid_shape() -> None:
    assert get_anyres_image_grid_shape((1000, 200), PINPOINTS, 336) == (3, 1)
    assert get_anyres_image_grid_shape((336, 336), PINPOINTS, 336) == (1, 2)


@pytest.mark.parametrize(
    ("size", "hw", "kept"),
    [
        ((640, 480), (48, 48), (36, 48)),
        ((480, 640), (48, 48), (48, 36)),
        ((1920, 1080), (48, 48), (28, 48)),
        ((1000, 200), (24, 72), (14, 72)),
        ((672, 672), (48, 48), (48, 48)),
    ],
)
def test_unpad_image(size: tuple[int, int], hw: tuple[int, int], kept: tuple[int, int]) -> None:
    feat = torch.arange(hw[0] * hw[1], dtype=torch.float32).reshape(1, *hw)
    out = unpad_image(feat, size)
    assert tuple(out.shape[1:]) == kept
    if kept[0] < hw[0]:  # rows were cut symmetrically
        pad = (hw[0] - kept[0]) // 2
        assert torch.equal(out[0, 0], feat[0, pad])


def test_resize_and_pad_letterbox() -> None:
    out = resize_and_pad_image(Image.new("RGB", (640, 480), (255, 255, 255)), (672, 672))
    assert out.size == (672, 672) and out.mode == "RGB"
    # 640x480 -> 672x504, pasted at y = (672 - 504) // 2 = 84 on black
    assert out.getpixel((336, 83)) == (0, 0, 0) and out.getpixel((336, 84)) == (255, 255, 255)
    assert out.getpixel((336, 587)) == (255, 255, 255) and out.getpixel((336, 588)) == (0, 0, 0)


def test_divide_to_patches_row_major() -> None:
    img = Image.new("RGB", (6, 4))
    for x in range(6):
        for y in range(4):
            img.putpixel((x, y), (x, y, 0))
    patches = divide_to_patches(img, 2)
    assert [p.getpixel((0, 0))[:2] for p in patches] == [(0, 0), (2, 0), (4, 0), (0, 2), (2, 2), (4, 2)]


def test_process_anyres_image_order() -> None:
    colours = {(0, 0): (255, 0, 0), (1, 0): (0, 255, 0), (0, 1): (0, 0, 255), (1, 1): (255, 255, 0)}
    img = Image.new("RGB", (672, 672))
    for (gx, gy), colour in colours.items():
        img.paste(Image.new("RGB", (336, 336), colour), (gx * 336, gy * 336))
    out = process_anyres_image(img, PINPOINTS, 336)
    assert out.shape == (5, 3, 336, 336)
    assert torch.equal(out[0], clip_preprocess(img.resize((336, 336), Image.Resampling.BICUBIC))[0])
    for k, cell in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):  # outer y, inner x
        assert torch.allclose(out[1 + k].mean(dim=(1, 2)), normalized(colours[cell]), atol=1e-4)


def test_process_anyres_base_is_squash_not_pad() -> None:
    img = Image.new("RGB", (1000, 200), (255, 255, 255))
    out = process_anyres_image(img, PINPOINTS, 336)
    assert out.shape == (4, 3, 336, 336)  # base + 3x1 tiles
    assert torch.allclose(out[0, :, 0, 0], normalized((255, 255, 255)), atol=1e-5)  # no black band in base
    assert torch.allclose(out[1, :, 0, 0], normalized((0, 0, 0)), atol=1e-5)  # tiles are letterboxed


def test_process_images_anyres_list() -> None:
    imgs = [Image.new("RGB", (640, 480)), Image.new("RGB", (1000, 200))]
    out = preprocess_images(imgs, "anyres", grid_pinpoints=str(PINPOINTS))
    assert isinstance(out, list) and [t.shape[0] for t in out] == [5, 4]
    with pytest.raises(ValueError):
        preprocess_images(imgs, "anyres")
