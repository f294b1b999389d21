"""Answer generation for JSONL question files: GQA, VQAv2, TextVQA, POPE, MME, VizWiz (128 new tokens).

LLaVA's command line works unchanged (`--max_new_tokens`, `--conv-mode` default llava_v1, `--temperature`
default 0.2; its scripts pass `--temperature 0 --conv-mode vicuna_v1`):
       python -m llava.eval.model_vqa_loader --model-path CKPT --question-file Q.jsonl --image-folder DIR
       --answers-file A.jsonl [--config CFG.yaml] [--set KEY=VALUE] [--batch-size N] [--num-chunks K --chunk-idx k]
"""

from __future__ import annotations

import argparse
import sys

from llava.eval.generation import add_common_args, cli
from llava.eval.questions import read_loader_questions


def build_parser(max_new_tokens: int = 128, description: str = __doc__) -> argparse.ArgumentParser:
    """Command-line options of the loader driver (and of model_vqa, which only has another token limit)."""
    ap = argparse.ArgumentParser(description=description.splitlines()[0])
    ap.add_argument("--question-file", required=True, help="LLaVA question JSONL (question_id, image, text)")
    ap.add_argument("--image-folder", required=True, help="folder the 'image' fields are relative to")
    add_common_args(ap, max_new_tokens=max_new_tokens)
    return ap


def main(argv: list[str] | None = None, max_new_tokens: int = 128) -> int:
    """Generate (or resume) the answers of one chunk; images are converted to RGB as the reference does."""
    args = build_parser(max_new_tokens).parse_args(argv)
    return cli(args, lambda: read_loader_questions(args.question_file, args.image_folder))


if __name__ == "__main__":
    sys.exit(main())
