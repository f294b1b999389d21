"""LLaVA's GQA conversion: merged answers -> the predictions file GQA's eval.py reads.

    python scripts/convert_gqa_for_eval.py --src merge.jsonl --dst gqa/data/testdev_balanced_predictions.json
"""

from __future__ import annotations

import argparse
import sys

from llava.eval.scoring.common import read_jsonl, refuse_overwrite, write_json
from llava.eval.scoring.gqa import convert_answers


def main(argv: list[str] | None = None) -> int:
    """Write `[{"questionId", "prediction"}]` (answer text without a trailing '.', lowercased)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", required=True, help="answer JSONL (the merged chunks)")
    ap.add_argument("--dst", required=True, help="predictions JSON to write")
    args = ap.parse_args(argv)
    refuse_overwrite({"--dst": args.dst}, {"--src": args.src})
    try:
        predictions = convert_answers(read_jsonl(args.src))
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {args.src}: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    write_json(args.dst, predictions, indent=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
