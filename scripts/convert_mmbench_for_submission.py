"""LLaVA's MMBench conversion: `<result-dir>/<experiment>.jsonl` -> `<upload-dir>/<experiment>.xlsx`, the TSV
without hint / category / source / image / comment / l2-category and with a `prediction` column.

    python scripts/convert_mmbench_for_submission.py --annotation-file mmbench_dev_20230712.tsv \\
        --result-dir answers/mmbench_dev_20230712 --upload-dir answers_upload/mmbench_dev_20230712 --experiment run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llava.eval.scoring.common import read_jsonl, refuse_overwrite
from llava.eval.scoring.mmbench import read_tsv, write_submission


def main(argv: list[str] | None = None) -> int:
    """Write the upload spreadsheet of one experiment's answers."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotation-file", required=True, help="the MMBench TSV the answers are for")
    ap.add_argument("--result-dir", required=True, help="folder holding <experiment>.jsonl")
    ap.add_argument("--upload-dir", required=True, help="folder the <experiment>.xlsx goes to")
    ap.add_argument("--experiment", required=True, help="answer-file stem")
    args = ap.parse_args(argv)
    answers_file = Path(args.result_dir) / f"{args.experiment}.jsonl"
    upload = Path(args.upload_dir) / f"{args.experiment}.xlsx"
    refuse_overwrite({"--upload-dir": upload}, {"--annotation-file": args.annotation_file})
    try:
        rows, answers = read_tsv(args.annotation_file), read_jsonl(answers_file)
    except (OSError, ValueError) as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    write_submission(rows, answers, upload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
