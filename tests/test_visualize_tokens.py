"""The token figure: the tracer's stage token sets (VisionDrop merges what it does not keep, so no patch is ever
lost; with merge=false nothing is merged), and the PNG / PDF figures of VisionDrop on a NeXT image and of a
FastV-vs-VisionDrop comparison, checked for size and for the colour classes in each stage column."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import encode_prompt, stand_in_image
from PIL import Image, ImageDraw

from llava.model.tiny import tiny_llava_next_path
from llava.model.token_trace import trace_stages

REPO = Path(__file__).resolve().parents[1]
VD64 = REPO / "configs/visiondrop/llava15_64.yaml"


def _script():
    spec = importlib.util.spec_from_file_location("visualize_tokens", REPO / "scripts/visualize_tokens.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["visualize_tokens"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _trace(load_tiny, overrides=()):
    tok, model = load_tiny(VD64, overrides)
    ids = encode_prompt(tok, "What is on the table?")[None]
    return trace_stages(model, ids, stand_in_image(3), [(336, 336)])


def test_visiondrop_stages_keep_or_merge_every_patch(load_tiny):
    stages = _trace(load_tiny)
    assert [(s.layer, s.tokens) for s in stages] == [(None, 96), (8, 70), (16, 52), (24, 38)]
    assert [(len(s.dominant), len(s.groups)) for s in stages] == [(83, 12), (60, 9), (44, 7), (32, 5)]  # + CLS
    for stage in stages:
        pieces = [{p} for p in stage.dominant if p not in stage.carried] + [*stage.carried.values(),
                                                                            *stage.groups.values()]
        assert sum(len(p) for p in pieces) == 576 and set().union(*pieces) == set(range(576))  # disjoint, complete
        assert all(anchor in group for anchor, group in stage.groups.items())


def test_without_merging_only_dominant_tokens_remain(load_tiny):
    stages = _trace(load_tiny, ["merge=false"])
    assert [(len(s.dominant), len(s.groups), len(s.carried)) for s in stages] == [
        (95, 0, 0), (69, 0, 0), (51, 0, 0), (37, 0, 0)]
    assert set(stages[3].dominant) < set(stages[2].dominant) < set(stages[1].dominant) < set(stages[0].dominant)


def _house(path: Path) -> Path:
    """A 640x420 picture (a 2x2 anyres grid on NeXT)."""
    image = Image.new("RGB", (640, 420), (90, 140, 200))
    pen = ImageDraw.Draw(image)
    pen.rectangle((0, 300, 640, 420), fill=(60, 150, 60))
    pen.ellipse((380, 40, 500, 160), fill=(250, 220, 60))
    pen.rectangle((80, 180, 260, 330), fill=(180, 50, 40))
    image.save(path)
    return path


def _columns(figure: np.ndarray, top: int, bottom: int, count: int, col_w: int) -> list[np.ndarray]:
    """The panel area of each column of a block."""
    return [figure[top:bottom, 110 + c * (col_w + 12): 110 + c * (col_w + 12) + col_w] for c in range(count)]


def _has(panel: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((panel == np.array(colour)).all(axis=-1).sum())


def test_next_figure_shows_every_stage_of_every_sub_image(tiny_path, tmp_path):
    viz = _script()
    out = tmp_path / "next"
    assert viz.main(["--image", str(_house(tmp_path / "house.png")), "--model-path",
                     str(tiny_llava_next_path(tiny_path.parent)), "--config",
                     str(REPO / "configs/visiondrop/llava_next_320.yaml"), "--cell", "4", "--out", str(out)]) == 0
    assert (tmp_path / "next.pdf").read_bytes().startswith(b"%PDF")
    figure = np.asarray(Image.open(tmp_path / "next.png").convert("RGB"))
    # 5 columns (input, LLM input, 3 LLM stages) of 48 cells x 4 px; rows: base (24 cells), crops 2x2 (48 cells)
    assert figure.shape == (40 + (32 + 40 + 96 + 12 + 192 + 12) + 12 + 34, 110 + 5 * (192 + 12), 3)
    columns = _columns(figure, 40 + 72, 40 + 72 + 96 + 12 + 192, 5, 192)
    assert _has(columns[0], viz.DOMINANT) == 0 and _has(columns[0], viz.CONTEXTUAL) == 0
    for panel in columns[1:]:
        assert _has(panel, viz.DOMINANT) > 0 and _has(panel, viz.CONTEXTUAL) > 0
        crops = panel[96 + 12:]
        assert _has(crops, viz.DOMINANT) > 0  # the high-resolution crops are drawn too, not only the base


def test_comparison_of_two_methods(tiny_path, tmp_path):
    viz = _script()
    assert viz.main(["--image", str(_house(tmp_path / "house.png")), "--model-path", str(tiny_path),
                     "--config", str(REPO / "configs/fastv/llava15_64.yaml"), "--config", str(VD64),
                     "--cell", "6", "--format", "png", "--out", str(tmp_path / "cmp.png")]) == 0
    assert not (tmp_path / "cmp.pdf").exists()
    figure = np.asarray(Image.open(tmp_path / "cmp.png").convert("RGB"))
    block_h = 32 + 40 + 144 + 12
    assert figure.shape == (40 + 2 * (block_h + 12) + 34, max(900, 110 + 5 * (144 + 12)), 3)
    fastv = _columns(figure, 40 + 72, 40 + 72 + 144, 2, 144)  # input = LLM input, then the stage at layer 2
    assert _has(fastv[1], viz.DOMINANT) > 0 and _has(fastv[1], viz.CONTEXTUAL) == 0
    assert (fastv[1] > 200).all(axis=-1).mean() > 0.5  # most patches dropped: faded
    top = 40 + block_h + 12 + 72
    visiondrop = _columns(figure, top, top + 144, 5, 144)
    assert all(_has(p, viz.DOMINANT) > 0 and _has(p, viz.CONTEXTUAL) > 0 for p in visiondrop[1:])


@pytest.mark.parametrize("bad,message", [
    (["--image", "absent.png"], "absent.png"),
    (["--set", "merge=maybe"], "merge: expected true or false, got 'maybe'"),
])
def test_bad_input_is_one_line(bad, message, tmp_path, capsys):
    image = str(_house(tmp_path / "house.png"))
    args = ["--image", image, "--out", str(tmp_path / "x"), *bad]
    assert _script().main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not list(tmp_path.glob("x.*"))
