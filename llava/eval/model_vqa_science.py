"""Answer generation for ScienceQA (`llava_test_CQM-A.json`): text-only problems run without an image, image
problems get `<image>\\n`; 1024 new tokens by default.

LLaVA's flags and defaults: `--conv-mode` llava_v0, `--temperature` 0.2, `--single-pred-prompt` off (its
sqa.sh passes it, with `--temperature 0 --conv-mode vicuna_v1`), `--answer-prompter` accepted (ignored, as there).
       python -m llava.eval.model_vqa_science --model-path CKPT --question-file llava_test_CQM-A.json
       --image-folder scienceqa/images/test --answers-file A.jsonl [--single-pred-prompt] [--config CFG.yaml] [...]
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
    ap.add_argument("--single-pred-prompt", action="store_true",
                    help="append the answer-with-a-letter instruction (LLaVA's sqa.sh passes it)")
    ap.add_argument("--answer-prompter", action="store_true",
                    help="accepted for LLaVA's command lines; like LLaVA-1.5's driver it changes nothing")
    add_common_args(ap, max_new_tokens=1024, conv_mode="llava_v0")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Generate (or resume) ScienceQA answers; images are not RGB-converted (reference behaviour)."""
    args = build_parser().parse_args(argv)
    return cli(args, lambda: read_science_questions(args.question_file, args.image_folder,
                                                    args.single_pred_prompt))


if __name__ == "__main__":
    sys.exit(main())
