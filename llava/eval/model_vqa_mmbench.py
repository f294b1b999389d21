"""Answer generation for MMBench / MMBench-CN TSVs (base64 images, options A..D, hint; spec §7.2-7.3).

Usage: python -m llava.eval.model_vqa_mmbench --model-path CKPT --question-file mmbench_dev_20230712.tsv
       --answers-file A.jsonl [--lang en|cn] [--config CFG.yaml] [...]
Answer lines add `round_id`, `options` and `option_char`; `question_id` is the TSV `index`.
"""

from __future__ import annotations

import argparse
import sys

from llava.eval.generation import add_common_args, cli
from llava.eval.questions import read_mmbench_questions


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the MMBench driver."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--question-file", required=True, help="MMBench TSV")
    ap.add_argument("--lang", default="en", choices=("en", "cn"), help="language of the letter instruction")
    ap.add_argument("--single-pred-prompt", action=argparse.BooleanOptionalAction, default=True,
                    help="append the answer-with-a-letter instruction (the reference scripts do)")
    add_common_args(ap, max_new_tokens=1024)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Generate (or resume) MMBench answers; decoded images are not RGB-converted (reference behaviour)."""
    args = build_parser().parse_args(argv)
    return cli(args, lambda: read_mmbench_questions(args.question_file, args.lang, args.single_pred_prompt))


if __name__ == "__main__":
    sys.exit(main())
