"""VQAv2 (docs/pipeline.md, 'VQAv2'): EvalAI upload over all test questions, and local accuracy with annotations."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llava.eval.scoring.answer_processor import EvalAIAnswerProcessor, vqa_accuracy
from llava.eval.scoring.common import pct, read_json, read_jsonl, read_jsonl_tolerant, refuse_overwrite, write_json
from llava.eval.scoring.results import add_result_args, finish_cli

BENCHMARK = "vqav2"


def convert_for_submission(answers: Iterable[Mapping[str, Any]],
                           questions: Iterable[Mapping[str, Any]]) -> tuple[list[dict], dict[str, int]]:
    """`[{"question_id": int, "answer": processed text or ""}]` over all questions, plus counts."""
    proc = EvalAIAnswerProcessor()
    preds = {int(a["question_id"]): a["text"] for a in answers}
    out, missing = [], 0
    for q in questions:
        qid = int(q["question_id"])
        if qid in preds:
            out.append({"question_id": qid, "answer": proc(preds[qid])})
        else:
            missing += 1
            out.append({"question_id": qid, "answer": ""})
    return out, {"questions": len(out), "answered": len(out) - missing, "missing": missing,
                 "extra_answers": len(set(preds) - {o["question_id"] for o in out})}


def score_vqav2(answers: Iterable[Mapping[str, Any]], annotations: Iterable[Mapping[str, Any]]) -> dict:
    """Local VQA accuracy (%) against official-format annotations (`answers`: list of {"answer"}).

    Prediction and ground truths are normalised with EvalAIAnswerProcessor; an annotated question with no
    answer scores 0 and is counted in `missing_answers`.
    """
    proc = EvalAIAnswerProcessor()
    preds = {int(a["question_id"]): a["text"] for a in answers}
    scores, missing = [], 0
    for ann in annotations:
        qid = int(ann["question_id"])
        gts = [g["answer"] if isinstance(g, Mapping) else g for g in ann["answers"]]
        if qid not in preds:
            missing += 1
            scores.append(0.0)
            continue
        scores.append(vqa_accuracy(preds[qid], gts, proc))
    return {"accuracy": pct(sum(scores), len(scores)), "total": len(scores), "missing_answers": missing}


def main(argv: list[str] | None = None) -> None:
    """CLI: write the EvalAI upload file and/or score against a local annotation file."""
    ap = argparse.ArgumentParser(description="VQAv2 submission conversion (+ local accuracy on val).")
    ap.add_argument("--answers", required=True, help="merge.jsonl answer file")
    ap.add_argument("--question-file", default=None, help="llava_vqav2_mscoco_test2015.jsonl (all questions)")
    ap.add_argument("--upload-file", default=None, help="answers_upload/{split}/{ckpt}.json")
    ap.add_argument("--annotation-file", default=None, help="official VQA annotations (val), local acc")
    add_result_args(ap)
    args = ap.parse_args(argv)
    refuse_overwrite({"--upload-file": args.upload_file, "--output-json": args.output_json},
                     {"--answers": args.answers, "--question-file": args.question_file,
                      "--annotation-file": args.annotation_file})
    answers, bad = read_jsonl_tolerant(args.answers)
    print(f"answers: {len(answers)}, unparsable lines: {bad}")
    if args.upload_file:
        if not args.question_file:
            ap.error("--upload-file needs --question-file")
        upload, counts = convert_for_submission(answers, read_jsonl(args.question_file))
        write_json(Path(args.upload_file), upload, indent=None)
        print(f"wrote {args.upload_file}: {counts}")
    if args.annotation_file:
        finish_cli(args, BENCHMARK, score_vqav2(answers, read_json(args.annotation_file)["annotations"]))


if __name__ == "__main__":
    main()
