"""Answer generation for MMBench / MMBench-CN TSVs (base64 images, options A..D, hint).

LLaVA's flags and defaults: `--conv-mode` llava_v1, `--temperature` 0.2, `--single-pred-prompt` off (its
mmbench.sh passes it), `--all-rounds` (one answer per option, options rotated), `--lang cn`.
       python -m llava.eval.model_vqa_mmbench --model-path CKPT --question-file mmbench_dev_20230712.tsv
       --answers-file A.jsonl [--single-pred-prompt] [--lang en|cn] [--all-rounds] [--config CFG.yaml] [...]
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
    ap.add_argument("--image-folder", default="", help="accepted for LLaVA's command lines; images are in the TSV")
    ap.add_argument("--lang", default="en", choices=("en", "cn"), help="language of the letter instruction")
    ap.add_argument("--single-pred-prompt", action="store_true",
                    help="append the answer-with-a-letter instruction (LLaVA's mmbench.sh passes it)")
    ap.add_argument("--all-rounds", action="store_true",
                    help="one answer per option, the options rotated by one each round (round_id 0..n-1)")
    add_common_args(ap, max_new_tokens=1024)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Generate (or resume) MMBench answers; decoded images are not RGB-converted (reference behaviour)."""
    args = build_parser().parse_args(argv)
    return cli(args, lambda: read_mmbench_questions(args.question_file, args.lang, args.single_pred_prompt,
                                                    args.all_rounds))


if __name__ == "__main__":
    sys.exit(main())
