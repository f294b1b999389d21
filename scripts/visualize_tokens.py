"""Draw which visual tokens survive each pruning stage over the image (like Figures 3-4 of the paper).

    python scripts/visualize_tokens.py --image photo.jpg --config configs/visiondrop/llava15_64.yaml --out kept.png

Without --model-path it uses the tiny random default model (the picture then shows the mechanics only).
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image, ImageDraw

from llava.conversation import build_prompt
from llava.mm_utils import expand2square, load_image, preprocess_images, tokenizer_image_token
from llava.model.tiny import tiny_llava_path
from llava.model.visiondrop_llava import load_model_for_eval


def kept_patch_sets(model, tokenizer, image: Image.Image, question: str) -> list[set[int]]:
    """Run one forward; return, per stage (tower output, then each LLM boundary), the kept patch indices.

    Origins are tower-token ids: patch j of sub-image u is u * P + j (CLS -1, NeXT newline -2); the picture
    shows the first (base) sub-image, so only ids below P are drawn."""
    pixels = preprocess_images([image], model.config.image_aspect_ratio, model.get_vision_tower().config.image_size,
                            getattr(model.config, "image_grid_pinpoints", None))
    ids = tokenizer_image_token(build_prompt("<image>\n" + question), tokenizer, return_tensors="pt")
    model(ids[None], images=pixels, image_sizes=[image.size])
    patches = model.get_vision_tower().num_patches
    return [{int(i) for i in origin[0] if 0 <= i < patches} for origin in model.last_stats.stage_origins]


def draw(image: Image.Image, stages: list[set[int]], grid: int, cell: int = 224) -> Image.Image:
    """One panel per stage: kept patches in full colour, dropped ones dimmed."""
    square = expand2square(image.convert("RGB"), (122, 116, 104)).resize((cell, cell))
    canvas = Image.new("RGB", (cell * len(stages), cell + 18), "white")
    step = cell / grid
    for k, kept in enumerate(stages):
        panel = square.copy()
        shade = Image.new("RGBA", panel.size, (0, 0, 0, 0))
        pen = ImageDraw.Draw(shade)
        for p in range(grid * grid):
            if p not in kept:
                x, y = (p % grid) * step, (p // grid) * step
                pen.rectangle([x, y, x + step, y + step], fill=(255, 255, 255, 190))
        panel = Image.alpha_composite(panel.convert("RGBA"), shade).convert("RGB")
        canvas.paste(panel, (k * cell, 18))
        ImageDraw.Draw(canvas).text((k * cell + 4, 2), f"stage {k}: {len(kept)} patches", fill="black")
    return canvas


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True)
    parser.add_argument("--config", default="configs/visiondrop/llava15_64.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--model-path", default=None)
    parser.add_argument("--question", default="Describe the image.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="kept_tokens.png")
    args = parser.parse_args(argv)
    model_path = args.model_path or str(tiny_llava_path())
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    tok, model, _, _ = load_model_for_eval(model_path, args.config, args.set, device=args.device, dtype=dtype)
    stages = kept_patch_sets(model, tok, load_image(args.image), args.question)
    vision_cfg = model.get_vision_tower().config
    grid = vision_cfg.image_size // vision_cfg.patch_size
    draw(load_image(args.image), stages, grid).save(args.out)
    print(f"wrote {args.out}: kept patches per stage {[len(s) for s in stages]}")


if __name__ == "__main__":
    main()
