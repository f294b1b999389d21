"""GQA (docs/pipeline.md, 'GQA'): answers → official predictions file, and exact-match accuracy on test-dev balanced."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llava.eval.scoring.common import pct, read_json, read_jsonl, refuse_overwrite, write_json
from llava.eval.scoring.results import add_result_args, finish_cli

BENCHMARK = "gqa"


def convert_answers(answers: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Answer lines → `[{"questionId", "prediction": text.rstrip('.').lower()}]`."""
    return [{"questionId": str(a["question_id"]), "prediction": a["text"].rstrip(".").lower()}
            for a in answers]


def score_gqa(predictions: Iterable[Mapping[str, Any]], questions: Mapping[str, Mapping[str, Any]]) -> dict:
    """Accuracy (%) of predictions against official questions (qid → {"answer", ["isBalanced"]}).

    A question without a prediction counts as wrong and is reported in `missing_predictions`; predictions for
    ids not in the question file are reported in `extra_predictions` and ignored.
    """
    pred = {str(p["questionId"]): p["prediction"] for p in predictions}
    scored = {str(q): v for q, v in questions.items() if v.get("isBalanced", True)}
    correct = sum(1 for qid, q in scored.items() if qid in pred and pred[qid] == q["answer"])
    missing = sum(1 for qid in scored if qid not in pred)
    return {
        "accuracy": pct(correct, len(scored)),
        "correct": correct,
        "total": len(scored),
        "missing_predictions": missing,
        "extra_predictions": sum(1 for qid in pred if qid not in scored),
    }


def main(argv: list[str] | None = None) -> None:
    """CLI: convert merged answers and (optionally) score them."""
    ap = argparse.ArgumentParser(description="GQA: convert answers to predictions, score test-dev balanced.")
    ap.add_argument("--answers", required=True, help="merge.jsonl answer file")
    ap.add_argument("--predictions-out", default=None,
                    help="write predictions here (gqa/data/testdev_balanced_predictions.json)")
    ap.add_argument("--questions", default=None, help="official testdev_balanced_questions.json")
    add_result_args(ap)
    args = ap.parse_args(argv)
    refuse_overwrite({"--predictions-out": args.predictions_out, "--output-json": args.output_json},
                     {"--answers": args.answers, "--questions": args.questions})
    predictions = convert_answers(read_jsonl(args.answers))
    if args.predictions_out:
        write_json(Path(args.predictions_out), predictions, indent=None)
        print(f"wrote {len(predictions)} predictions to {args.predictions_out}")
    if args.questions:
        finish_cli(args, BENCHMARK, score_gqa(predictions, read_json(args.questions)))


if __name__ == "__main__":
    main()
