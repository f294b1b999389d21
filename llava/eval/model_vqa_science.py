"""Answer generation for ScienceQA (`llava_test_CQM-A.json`, spec §7.6): text-only problems run without an
image, image problems get `<image>\\n`, the letter instruction is appended; 1024 new tokens by default.

Usage: python -m llava.eval.model_vqa_science --model-path CKPT --question-file llava_test_CQM-A.json
       --image-folder scienceqa/images/test --answers-file A.jsonl [--config CFG.yaml] [...]
"""

from __future__ import annotations

import argparse
import sys

from llava.eval.generation import add_common_args, cli
from llava.eval.questions import read_science_questions


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the ScienceQA driver."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--question-file", required=True, help="llava_test_CQM-A.json")
    ap.add_argument("--image-folder", required=True, help="scienceqa/images/test")
    ap.add_argument("--single-pred-prompt", action=argparse.BooleanOptionalAction, default=True,
                    help="append the answer-with-a-letter instruction (the reference scripts do)")
    add_common_args(ap, max_new_tokens=1024)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Generate (or resume) ScienceQA answers; images are not RGB-converted (reference behaviour)."""
    args = build_parser().parse_args(argv)
    return cli(args, lambda: read_science_questions(args.question_file, args.image_folder,
                                                    args.single_pred_prompt))


if __name__ == "__main__":
    sys.exit(main())
