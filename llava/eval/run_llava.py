"""One-shot inference: answer one question about one or more images (files or http(s) URLs).

    python -m llava.eval.run_llava --model-path PATH --image-file photo.jpg --query "What is shown?"

LLaVA's flags and defaults: `--sep` (default ',') splits `--image-file` into several images, `--conv-mode` is
inferred from the model name when left out, `--temperature` 0.2, `--max_new_tokens` 512; `<image-placeholder>`
in the query marks where the images go (else they come first). From Python: `eval_model(args)` with the same
fields (missing ones take these defaults). Without --model-path it uses the tiny random default model (the
answer is then meaningless). Any pruning config works: --config C [--set KEY=VALUE ...] or the VisionDrop flags.
"""

from __future__ import annotations

import argparse
import io
import sys
import urllib.request
from typing import Any

from PIL import Image

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_PLACEHOLDER
from llava.conversation import build_prompt
from llava.eval.generation import pruning_config, resolve_device_dtype
from visiondrop.config import ConfigError

# torch and the model are imported where they are used, so that `--help` answers at once.

DEFAULTS = {"model_path": None, "model_base": None, "conv_mode": None, "sep": ",", "temperature": 0.2,
            "top_p": None, "num_beams": 1, "max_new_tokens": 512, "config": None, "set": [], "dominant": None,
            "contextual": None, "layer_list": None, "image_token_list": None, "vision_tower": None,
            "device": "auto", "eager_decode": False}


def conv_mode_for(model_name: str) -> str:
    """LLaVA's template for a model name: llama-2, mistral, v1.6-34b, v1, mpt, else llava_v0."""
    name = model_name.lower()
    for key, mode in (("llama-2", "llava_llama_2"), ("mistral", "mistral_instruct"), ("v1.6-34b", "chatml_direct"),
                      ("v1", "llava_v1"), ("mpt", "mpt")):
        if key in name:
            return mode
    return "llava_v0"


def load_image(image_file: str) -> Image.Image:
    """An RGB image from a file path or an http(s) URL; errors name the file or URL."""
    from llava.mm_utils import load_image as load_image_file

    if not image_file.startswith("http"):
        return load_image_file(image_file)
    try:
        with urllib.request.urlopen(image_file, timeout=60) as response:
            data = response.read()
        return Image.open(io.BytesIO(data)).convert("RGB")
    except Exception as err:  # URLError, HTTPError, timeouts, PIL.UnidentifiedImageError
        raise ValueError(f"cannot load image URL {image_file} ({type(err).__name__}: {err})") from err


def build_query(query: str, n_images: int) -> str:
    """The user turn: each `<image-placeholder>` becomes `<image>`; without one the images lead the query."""
    if IMAGE_PLACEHOLDER in query:
        return query.replace(IMAGE_PLACEHOLDER, DEFAULT_IMAGE_TOKEN)
    return DEFAULT_IMAGE_TOKEN * n_images + "\n" + query


def eval_model(args: Any) -> str:
    """LLaVA's `eval_model`: load the model, answer `args.query` about `args.image_file`, print and return it."""
    from llava.mm_utils import get_model_name_from_path, process_images, tokenizer_image_token
    from llava.model.tiny import tiny_llava_path
    from llava.model.visiondrop_llava import load_model_for_eval

    fields = {**DEFAULTS, "image_file": None, "query": None}
    opts = argparse.Namespace(**{k: getattr(args, k, default) for k, default in fields.items()})
    if opts.num_beams != 1:
        raise ValueError("num_beams > 1 is not supported (greedy or sampling with one beam)")
    images = [load_image(f) for f in opts.image_file.split(opts.sep)]
    model_path = opts.model_path or str(tiny_llava_path())
    conv_mode = conv_mode_for(get_model_name_from_path(model_path))
    if opts.conv_mode is not None and opts.conv_mode != conv_mode:
        print(f"[WARNING] the auto inferred conversation mode is {conv_mode}, while `--conv-mode` is "
              f"{opts.conv_mode}, using {opts.conv_mode}")
    conv_mode = opts.conv_mode or conv_mode
    device, dtype = resolve_device_dtype(opts.device, "auto")
    tokenizer, model, image_processor, _ = load_model_for_eval(
        model_path, pruning_config(opts), model_base=opts.model_base, device=device, dtype=dtype,
        vision_tower=opts.vision_tower)
    if getattr(model.config, "mm_use_im_start_end", False):
        raise NotImplementedError("checkpoints with mm_use_im_start_end=true are not supported")
    prompt = build_prompt(build_query(opts.query, len(images)), conv_mode)
    ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt")[None].to(model.device)
    pixels = process_images(images, image_processor, model.config)
    cast = {"device": model.device, "dtype": model.dtype}
    pixels = [p.to(**cast) for p in pixels] if isinstance(pixels, list) else pixels.to(**cast)
    out = model.generate(ids, images=pixels, image_sizes=[im.size for im in images],
                         max_new_tokens=opts.max_new_tokens, do_sample=opts.temperature > 0,
                         temperature=opts.temperature, top_p=opts.top_p, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id or 0, cuda_graph=False if opts.eager_decode else None)
    text = tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip()
    print(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    """LLaVA's run_llava options plus the pruning config, vision tower and device."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", default=None, help="LLaVA checkpoint directory (default: tiny random model)")
    ap.add_argument("--model-base", default=None, help="base LLM of a LoRA or projector-only checkpoint")
    ap.add_argument("--image-file", required=True, help="image file(s) or URL(s), separated by --sep")
    ap.add_argument("--query", required=True)
    ap.add_argument("--conv-mode", default=None, help="prompt template (default: inferred from the model name)")
    ap.add_argument("--sep", default=",", help="separator between several --image-file entries")
    ap.add_argument("--temperature", type=float, default=0.2, help="LLaVA's default 0.2; 0 = greedy")
    ap.add_argument("--top_p", type=float, default=None)
    ap.add_argument("--num_beams", type=int, default=1)
    ap.add_argument("--max_new_tokens", "--max-new-tokens", dest="max_new_tokens", type=int, default=512)
    ap.add_argument("--config", default=None, help="pruning config YAML (default: unpruned)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--dominant", type=int, default=None, help="released flag: encoder.dominant")
    ap.add_argument("--contextual", type=int, default=None, help="released flag: encoder.contextual")
    ap.add_argument("--layer_list", default=None, help="released flag: llm.layers")
    ap.add_argument("--image_token_list", default=None, help="released flag: llm.tokens")
    ap.add_argument("--vision-tower", default=None, help="local CLIP directory (overrides mm_vision_tower)")
    ap.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cuda, cpu")
    ap.add_argument("--eager-decode", action="store_true", help="the eager path instead of the CUDA-graph one")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Answer one question; bad input is one line on stderr with exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        eval_model(args)
    except (ConfigError, FileNotFoundError, NotImplementedError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
