"""Figure of the visual tokens every pruning stage keeps on one image (the paper's Figures 3-4), PNG and PDF.

    python scripts/visualize_tokens.py --image photo.jpg --config configs/visiondrop/llava15_64.yaml --out kept
    python scripts/visualize_tokens.py --image photo.jpg --config configs/fastv/llava15_64.yaml \\
        --config configs/visiondrop/llava15_64.yaml --out compare        # one row block per method

Columns: the input, the LLM input (after the encoder stage, if the method has one), then every LLM stage with
the decoder layer it starts at. Rows: every sub-image view (LLaVA-1.5: the padded image; LLaVA-NeXT: the base
image and the high-resolution crops in their grid). Dominant tokens have a red frame, contextual tokens a blue
frame, and the patches merged into each contextual token are tinted in that token's group colour (groups merged
at an earlier stage stay visible, paler, on the token that carries them); dropped patches are faded.
Without --model-path it uses the tiny random default model (the picture then shows the mechanics only).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DOMINANT = (220, 38, 38)
CONTEXTUAL = (37, 99, 235)
CARRIED = (245, 158, 11)
FADE = (255, 255, 255, 200)
GROUP_COLOURS = [(16, 185, 129), (168, 85, 247), (236, 72, 153), (20, 184, 166), (132, 204, 22), (14, 165, 233),
                 (217, 70, 239), (101, 163, 13), (6, 182, 212), (139, 92, 246)]
PAD = 12
# The torch path without CUDA graphs, so that every merge is observed (same selections as the fast path).
TRACING = ["execution.kernels=torch", "execution.graph_max_tokens=0"]


def font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled scalable font (a bitmap one on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


@dataclass
class View:
    """One drawn view: the image as the model saw it and where each sub-image's patch grid lies on it."""

    name: str
    image: Image.Image
    tiles: dict[int, tuple[int, int]]  # sub-image -> (column, row) of its first patch, in patch cells
    cols: int
    rows: int


def build_views(image: Image.Image, model, side: int) -> list[View]:
    """LLaVA-1.5 ('pad'): the padded square. NeXT ('anyres'): the squashed base and the grid of crops."""
    from llava.mm_utils import expand2square, resize_and_pad_image, select_best_resolution

    image = image.convert("RGB")
    if getattr(model.config, "image_aspect_ratio", "pad") != "anyres":
        return [View("image", expand2square(image, (122, 116, 104)), {0: (0, 0)}, side, side)]
    size = model.get_vision_tower().config.image_size
    width, height = select_best_resolution(image.size, model.config.image_grid_pinpoints)
    g_w, g_h = width // size, height // size
    tiles = {1 + i: ((i % g_w) * side, (i // g_w) * side) for i in range(g_w * g_h)}
    return [View("base image", image.resize((size, size), Image.Resampling.BICUBIC), {0: (0, 0)}, side, side),
            View(f"crops {g_w}x{g_h}", resize_and_pad_image(image, (width, height)), tiles, g_w * side, g_h * side)]


def render_panel(view: View, stage, side: int, cell: int) -> Image.Image:
    """A view at one stage (None: the input): faded dropped patches, tinted merge groups, framed tokens."""
    width, height = view.cols * cell, view.rows * cell
    panel = view.image.resize((width, height), Image.Resampling.BICUBIC).convert("RGBA")
    if stage is None:
        return panel.convert("RGB")
    patches = side * side

    def box(pid: int):
        u, j = divmod(pid, patches)
        if pid < 0 or u not in view.tiles:
            return None
        x, y = (view.tiles[u][0] + j % side) * cell, (view.tiles[u][1] + j // side) * cell
        return x, y, x + cell - 1, y + cell - 1

    shade = Image.new("RGBA", panel.size, (0, 0, 0, 0))
    pen = ImageDraw.Draw(shade)
    visible = set(stage.dominant) | {p for g in [*stage.groups.values(), *stage.carried.values()] for p in g}
    for u in view.tiles:
        for j in range(patches):
            if u * patches + j not in visible:
                pen.rectangle(box(u * patches + j), fill=FADE)
    for anchor, group in stage.carried.items():
        for pid in group - {anchor}:
            if box(pid):
                pen.rectangle(box(pid), fill=(*CARRIED, 70))
    for i, (_anchor, group) in enumerate(sorted(stage.groups.items())):
        for pid in group:
            if box(pid):
                pen.rectangle(box(pid), fill=(*GROUP_COLOURS[i % len(GROUP_COLOURS)], 100))
    panel = Image.alpha_composite(panel, shade).convert("RGB")
    frame = ImageDraw.Draw(panel)
    line = max(1, cell // 7)
    for pids, colour in ((stage.dominant, DOMINANT), (stage.groups, CONTEXTUAL)):
        for pid in pids:
            if box(pid):
                frame.rectangle(box(pid), outline=colour, width=line)
    return panel


def stage_caption(stage) -> tuple[list[str], list[str]]:
    """Two caption lines of a stage column, each as candidates from the longest to the shortest."""
    head = ["LLM input, after the encoder stage", "after the encoder stage"] if stage.layer is None else \
        [f"{stage.name}: from LLM layer {stage.layer}", f"from LLM layer {stage.layer}"]
    d, c = len(stage.dominant), len(stage.groups)
    extra = stage.tokens - d - c
    tail = ([f" + {extra} CLS/newline", f" + {extra} CLS"] if extra else ["", ""])
    return head, [f"{stage.tokens} = {d} dominant + {c} contextual{tail[0]}", f"{stage.tokens} = {d} dom + {c} ctx"
                  f"{tail[1]}", f"{stage.tokens} tokens"]


def fitted(pen: ImageDraw.ImageDraw, candidates: list[str], width: int, face) -> str:
    """The first candidate text that fits in width pixels (else the last)."""
    return next((t for t in candidates if pen.textlength(t, font=face) <= width), candidates[-1])


def render_block(views: list[View], stages: list, header: str, encoder_stage: bool, side: int,
                 cell: int) -> Image.Image:
    """One method: a header line, then one row per view and one column per stage (the input first; the LLM
    input has its own column only after an encoder stage)."""
    if not encoder_stage:
        stages = stages[1:]
    big, small = font(20), font(14)
    col_w = max(v.cols for v in views) * cell
    label_w = 110
    heights = [v.rows * cell for v in views]
    caption_h = 40
    width = label_w + (1 + len(stages)) * (col_w + PAD)
    height = 32 + caption_h + sum(h + PAD for h in heights)
    block = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(block)
    pen.text((PAD, 4), header, fill="black", font=big)
    first = ["input", "input"] if encoder_stage else ["input = LLM input", "input"]
    columns = [((first, [f"{side * side} patches per sub-image", f"{side * side} patches"]), None),
               *((stage_caption(s), s) for s in stages)]
    for c, ((line1, line2), stage) in enumerate(columns):
        x = label_w + c * (col_w + PAD)
        pen.text((x, 34), fitted(pen, line1, col_w, small), fill="black", font=small)
        pen.text((x, 52), fitted(pen, line2, col_w, small), fill=(70, 70, 70), font=small)
        y = 32 + caption_h
        for view, h in zip(views, heights):
            block.paste(render_panel(view, stage, side, cell), (x, y))
            y += h + PAD
    y = 32 + caption_h
    for view, h in zip(views, heights):
        pen.text((PAD, y + h // 2 - 8), view.name, fill="black", font=small)
        y += h + PAD
    return block


def render_legend(width: int) -> Image.Image:
    """Swatches: dominant, contextual, merge groups, carried groups, dropped."""
    small = font(14)
    legend = Image.new("RGB", (width, 34), "white")
    pen = ImageDraw.Draw(legend)
    x = PAD
    items = [("frame", DOMINANT, "dominant token"), ("frame", CONTEXTUAL, "contextual token (merge target)"),
             ("groups", None, "patches merged into it (one colour per group)"),
             ("fill", CARRIED, "merged at an earlier stage"), ("fill", (235, 235, 235), "dropped")]
    for kind, colour, text in items:
        if kind == "frame":
            pen.rectangle((x, 8, x + 17, 25), outline=colour, width=3)
            x += 22
        elif kind == "groups":
            for i in range(4):
                pen.rectangle((x, 8, x + 11, 25), fill=GROUP_COLOURS[i])
                x += 12
            x += 6
        else:
            pen.rectangle((x, 8, x + 17, 25), fill=colour, outline=(160, 160, 160))
            x += 22
        pen.text((x, 9), text, fill="black", font=small)
        x += int(pen.textlength(text, font=small)) + 24
    return legend


def compose(blocks: list[Image.Image], title: str) -> Image.Image:
    """Title, the method blocks one under the other, the legend."""
    width = max(max(b.width for b in blocks), 900)
    legend = render_legend(width)
    figure = Image.new("RGB", (width, 40 + sum(b.height + PAD for b in blocks) + legend.height), "white")
    ImageDraw.Draw(figure).text((PAD, 8), title, fill="black", font=font(22))
    y = 40
    for block in blocks:
        figure.paste(block, (0, y))
        y += block.height + PAD
    figure.paste(legend, (0, y))
    return figure


def method_header(config, overrides: list[str]) -> str:
    """'VisionDrop · 64 visual tokens · llava-v1.5-7b · llava15_64.yaml (merge=false)'."""
    from visiondrop.methods import get_method_class

    name = get_method_class(config.method).title or config.method
    budget = f"{config.budget:g} visual tokens" if config.budget is not None else "no budget"
    source = f" · {Path(config.source).name}" if config.source else ""
    return f"{name} · {budget} · {config.model}{source}" + (f" ({', '.join(overrides)})" if overrides else "")


def main(argv: list[str] | None = None) -> int:
    """Draw one method's stages, or several methods one under the other, to PNG and PDF."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True)
    parser.add_argument("--config", action="append", default=None,
                        help="pruning config YAML; repeat it to compare methods (default: VisionDrop-64)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every config")
    parser.add_argument("--model-path", default=None, help="LLaVA checkpoint (default: the tiny random model)")
    parser.add_argument("--question", default="Describe the image.")
    parser.add_argument("--device", default="auto", help="cuda or cpu (default auto: cuda when available)")
    parser.add_argument("--cell", type=int, default=14, help="pixels per patch cell")
    parser.add_argument("--format", nargs="+", default=["png", "pdf"], choices=("png", "pdf"))
    parser.add_argument("--out", default="kept_tokens", help="output path without extension (.png / .pdf added)")
    args = parser.parse_args(argv)
    from llava.conversation import build_prompt
    from llava.eval.generation import resolve_device_dtype
    from llava.mm_utils import load_image, preprocess_images, tokenizer_image_token
    from llava.model.tiny import tiny_llava_path
    from llava.model.token_trace import trace_stages
    from llava.model.visiondrop_llava import load_model_for_eval
    from visiondrop.config import load_config

    configs = args.config or ["configs/visiondrop/llava15_64.yaml"]
    try:
        device, dtype = resolve_device_dtype(args.device, "auto")
        image = load_image(args.image)
        loaded = [load_config(c, [*args.set, *TRACING]) for c in configs]
        tok, model, _, _ = load_model_for_eval(args.model_path or str(tiny_llava_path()), loaded[0],
                                               device=device, dtype=dtype)
    except (OSError, ValueError, NotImplementedError) as err:  # ConfigError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    vision_cfg = model.get_vision_tower().config
    side = vision_cfg.image_size // vision_cfg.patch_size
    pixels = preprocess_images([image], model.config.image_aspect_ratio, vision_cfg.image_size,
                            getattr(model.config, "image_grid_pinpoints", None))
    pixels = [p.to(device, dtype) for p in pixels] if isinstance(pixels, list) else pixels.to(device, dtype)
    ids = tokenizer_image_token(build_prompt("<image>\n" + args.question), tok, return_tensors="pt")[None]
    views = build_views(image, model, side)
    blocks = []
    for config in loaded:
        model.set_pruning(config)
        stages = trace_stages(model, ids.to(device), pixels, [image.size])
        encoder = bool(getattr(model.method, "has_encoder_stage", False)) if model.method is not None else False
        header = method_header(config, args.set)
        blocks.append(render_block(views, stages, header, encoder, side, args.cell))
        print(f"{header}: tokens per stage {[s.tokens for s in stages]}")
    title = f"Q: {args.question}   ({Path(args.image).name}, {Path(args.model_path or 'tiny random model').name})"
    figure = compose(blocks, title)
    out = Path(args.out)
    out = out.with_suffix("") if out.suffix.lower() in (".png", ".pdf") else out
    out.parent.mkdir(parents=True, exist_ok=True)
    for fmt in args.format:
        path = out.with_name(out.name + f".{fmt}")
        figure.save(path, "PDF", resolution=150.0) if fmt == "pdf" else figure.save(path)
        print(f"wrote {path} ({figure.width}x{figure.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
