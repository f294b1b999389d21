"""LLaVA's VQAv2 conversion: `<dir>/answers/<split>/<ckpt>/merge.jsonl` -> the EvalAI upload file
`<dir>/answers_upload/<split>/<ckpt>.json` over every test2015 question (unanswered ones get '').

    python scripts/convert_vqav2_for_submission.py --split llava_vqav2_mscoco_test-dev2015 --ckpt llava-v1.5-13b
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llava.eval.scoring.common import read_jsonl, read_jsonl_tolerant, write_json
from llava.eval.scoring.vqav2 import convert_for_submission


def main(argv: list[str] | None = None) -> int:
    """Convert one run's merged answers; print LLaVA's count line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="./playground/data/eval/vqav2", help="the vqav2 data folder")
    ap.add_argument("--ckpt", required=True, help="run name: the answers/<split>/<ckpt>/ folder")
    ap.add_argument("--split", required=True, help="question split, e.g. llava_vqav2_mscoco_test-dev2015")
    args = ap.parse_args(argv)
    root = Path(args.dir)
    src = root / "answers" / args.split / args.ckpt / "merge.jsonl"
    questions = root / "llava_vqav2_mscoco_test2015.jsonl"
    dst = root / "answers_upload" / args.split / f"{args.ckpt}.json"
    try:
        answers, bad = read_jsonl_tolerant(src)
        test_split = read_jsonl(questions)
        upload, _ = convert_for_submission(answers, test_split)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {type(err).__name__}: {err} (expected {src} and {questions})", file=sys.stderr)
        return 2
    print(f"total results: {len({a['question_id'] for a in answers})}, total split: {len(test_split)}, "
          f"error_line: {bad}")
    write_json(dst, upload, indent=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
