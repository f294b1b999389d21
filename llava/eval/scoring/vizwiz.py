"""VizWiz (docs/pipeline.md, 'VizWiz'): EvalAI upload (every question must have a prediction), optional local acc."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llava.eval.scoring.answer_processor import EvalAIAnswerProcessor, vqa_accuracy
from llava.eval.scoring.common import pct, read_json, read_jsonl, refuse_overwrite, write_json
from llava.eval.scoring.results import add_result_args, finish_cli

BENCHMARK = "vizwiz"


class MissingPredictionError(AssertionError):
    """Raised when some VizWiz questions have no prediction."""


def convert_for_submission(answers: Iterable[Mapping[str, Any]],
                           questions: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """`[{"image", "answer": EvalAIAnswerProcessor(text)}]` in question order; raise if any id is missing."""
    proc = EvalAIAnswerProcessor()
    preds = {a["question_id"]: a["text"] for a in answers}
    questions = list(questions)
    missing = [q["question_id"] for q in questions if q["question_id"] not in preds]
    if missing:
        raise MissingPredictionError(
            f"{len(missing)} VizWiz questions have no prediction: question_ids {missing[:20]}"
            + (" ..." if len(missing) > 20 else ""))
    return [{"image": q["image"], "answer": proc(preds[q["question_id"]])} for q in questions]


def score_vizwiz(upload: Iterable[Mapping[str, Any]], annotations: Iterable[Mapping[str, Any]]) -> dict:
    """Local VQA accuracy (%) of converted predictions against VizWiz-format annotations (val split)."""
    proc = EvalAIAnswerProcessor()
    preds = {u["image"]: u["answer"] for u in upload}
    annotations = list(annotations)
    scores = []
    for ann in annotations:
        gts = [g["answer"] if isinstance(g, Mapping) else g for g in ann["answers"]]
        scores.append(vqa_accuracy(preds[ann["image"]], gts, proc) if ann["image"] in preds else 0.0)
    return {"accuracy": pct(sum(scores), len(scores)), "total": len(scores),
            "missing_answers": sum(1 for a in annotations if a["image"] not in preds)}


def main(argv: list[str] | None = None) -> None:
    """CLI: write the VizWiz upload file (and score locally when annotations are given)."""
    ap = argparse.ArgumentParser(description="VizWiz submission conversion (+ local accuracy on val).")
    ap.add_argument("--answers", required=True, help="answer JSONL")
    ap.add_argument("--question-file", required=True, help="llava_test.jsonl")
    ap.add_argument("--upload-file", default=None, help="answers_upload/{exp}.json")
    ap.add_argument("--val-annotations", default=None,
                    help="VizWiz-format annotations (val) for a local accuracy (LLaVA's --annotation-file is the "
                         "question file)")
    add_result_args(ap)
    args = ap.parse_args(argv)
    refuse_overwrite({"--upload-file": args.upload_file, "--output-json": args.output_json},
                     {"--answers": args.answers, "--question-file": args.question_file,
                      "--val-annotations": args.val_annotations})
    upload = convert_for_submission(read_jsonl(args.answers), read_jsonl(args.question_file))
    if args.upload_file:
        write_json(Path(args.upload_file), upload, indent=None)
        print(f"wrote {len(upload)} answers to {args.upload_file}")
    if args.val_annotations:
        finish_cli(args, BENCHMARK, score_vizwiz(upload, read_json(args.val_annotations)))


if __name__ == "__main__":
    main()
