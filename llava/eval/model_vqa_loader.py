"""Answer generation for JSONL question files: GQA, VQAv2, TextVQA, POPE, MME, VizWiz (spec §6, 128 tokens).

Usage: python -m llava.eval.model_vqa_loader --model-path CKPT --question-file Q.jsonl --image-folder DIR
       --answers-file A.jsonl [--config CFG.yaml] [--set KEY=VALUE] [--batch-size N] [--num-chunks K --chunk-idx k]
"""

from __future__ import annotations

import argparse
import sys

from llava.eval.generation import add_common_args, cli
from llava.eval.questions import read_loader_questions


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the loader driver."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--question-file", required=True, help="LLaVA question JSONL (question_id, image, text)")
    ap.add_argument("--image-folder", required=True, help="folder the 'image' fields are relative to")
    add_common_args(ap, max_new_tokens=128)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Generate (or resume) the answers of one chunk; images are converted to RGB as the reference does."""
    args = build_parser().parse_args(argv)
    return cli(args, lambda: read_loader_questions(args.question_file, args.image_folder))


if __name__ == "__main__":
    sys.exit(main())
