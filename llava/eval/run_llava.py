"""One-shot inference: answer one question about one image.

    python -m llava.eval.run_llava --model-path PATH --image-file photo.jpg --query "What is shown?"

Without --model-path it uses the tiny random default model (the answer is then meaningless).
Any pruning config works: --config configs/visiondrop/llava15_64.yaml [--set KEY=VALUE ...].
"""

from __future__ import annotations

import argparse

import torch

from llava.conversation import build_prompt
from llava.mm_utils import load_image, process_images, tokenizer_image_token
from llava.model.tiny import tiny_llava_path
from llava.model.visiondrop_llava import load_model_for_eval


def answer(model, tokenizer, image_path: str, query: str, conv_mode: str = "vicuna_v1",
           max_new_tokens: int = 512, temperature: float = 0.0, cuda_graph: bool | None = None) -> str:
    """Generate the model's answer to `query` about the image at `image_path` (`cuda_graph`: see generate)."""
    image = load_image(image_path)
    tower = model.get_vision_tower()
    pixels = process_images([image], getattr(model.config, "image_aspect_ratio", "pad"), tower.config.image_size,
                            getattr(model.config, "image_grid_pinpoints", None))
    text = query if "<image>" in query else "<image>\n" + query
    ids = tokenizer_image_token(build_prompt(text, conv_mode), tokenizer, return_tensors="pt")
    out = model.generate(ids[None], images=pixels, image_sizes=[image.size], max_new_tokens=max_new_tokens,
                         do_sample=temperature > 0, temperature=temperature or 1.0,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id or 0,
                         cuda_graph=cuda_graph)
    return tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", default=None)
    parser.add_argument("--image-file", required=True)
    parser.add_argument("--query", required=True)
    parser.add_argument("--config", default=None, help="pruning config YAML (default: unpruned)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--conv-mode", default="vicuna_v1")
    parser.add_argument("--vision-tower", default=None)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--eager-decode", action="store_true", help="the eager path instead of the CUDA-graph one")
    args = parser.parse_args(argv)
    load_image(args.image_file)  # fail on a missing or corrupt image before loading the model
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    tokenizer, model, _, _ = load_model_for_eval(args.model_path or str(tiny_llava_path()), args.config, args.set,
                                                 device=args.device, dtype=dtype, vision_tower=args.vision_tower)
    print(answer(model, tokenizer, args.image_file, args.query, args.conv_mode, args.max_new_tokens,
                 args.temperature, False if args.eager_decode else None))


if __name__ == "__main__":
    main()
