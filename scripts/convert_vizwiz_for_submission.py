"""LLaVA's VizWiz conversion: answers -> the EvalAI upload file `[{"image", "answer"}]` (every question of
the annotation file must have an answer).

    python scripts/convert_vizwiz_for_submission.py --annotation-file vizwiz/llava_test.jsonl \\
        --result-file answers.jsonl --result-upload-file answers_upload/run.json
"""

from __future__ import annotations

import argparse
import sys

from llava.eval.scoring.common import read_jsonl, read_jsonl_tolerant, refuse_overwrite, write_json
from llava.eval.scoring.vizwiz import MissingPredictionError, convert_for_submission


def main(argv: list[str] | None = None) -> int:
    """Convert an answer file (`--result-file`, an input); print LLaVA's count line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotation-file", required=True, help="the question file, llava_test.jsonl")
    ap.add_argument("--result-file", required=True, help="the answer JSONL")
    ap.add_argument("--result-upload-file", required=True, help="the upload JSON to write")
    args = ap.parse_args(argv)
    refuse_overwrite({"--result-upload-file": args.result_upload_file},
                     {"--annotation-file": args.annotation_file, "--result-file": args.result_file})
    try:
        answers, bad = read_jsonl_tolerant(args.result_file)
        questions = read_jsonl(args.annotation_file)
        print(f"total results: {len({a['question_id'] for a in answers})}, total split: {len(questions)}, "
              f"error_line: {bad}")
        upload = convert_for_submission(answers, questions)
    except (OSError, ValueError, KeyError, MissingPredictionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_json(args.result_upload_file, upload, indent=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
