"""TextVQA (docs/pipeline.md, 'TextVQA'): match answers to annotations by (image_id, question.lower()); VQA accuracy."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping
from typing import Any

from llava.eval.scoring.answer_processor import EvalAIAnswerProcessor, vqa_accuracy
from llava.eval.scoring.common import pct, read_json, read_jsonl, refuse_overwrite
from llava.eval.scoring.results import add_result_args, finish_cli

BENCHMARK = "textvqa"


def question_from_prompt(prompt: str) -> str:
    """Recover the lowercased question from an answer's prompt (reference `prompt_processor`)."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        match = re.search(r"Question: (.*?) Short answer:", prompt, re.DOTALL)
        if match is None:
            raise ValueError(f"cannot recover the question from prompt {prompt!r}")
        question = match.group(1)
    elif "Reference OCR token: " in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith("Reference OCR token:") else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise ValueError(f"cannot recover the question from prompt {prompt!r}")
    return question.lower()


def index_annotations(annotations: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """Key annotation entries (`data[i]`) by (image_id, question.lower()); a later duplicate wins."""
    return {(str(a["image_id"]), a["question"].lower()): a for a in annotations}


def score_textvqa(answers: Iterable[Mapping[str, Any]], annotations: Iterable[Mapping[str, Any]],
                  strict: bool = True) -> dict:
    """VQA accuracy (%) over answers; each answer's key is (question_id = image id, question from prompt).

    Answers with no annotation are counted in `unmatched_answers`; with ``strict`` they raise ValueError.
    """
    index = index_annotations(annotations)
    proc = EvalAIAnswerProcessor()
    scores, unmatched = [], []
    for ans in answers:
        key = (str(ans["question_id"]), question_from_prompt(ans["prompt"]))
        ann = index.get(key)
        if ann is None:
            unmatched.append(key)
            continue
        scores.append(vqa_accuracy(ans["text"], ann["answers"], proc))
    if strict and unmatched:
        raise ValueError(f"{len(unmatched)} TextVQA answers have no annotation, e.g. {unmatched[:3]}")
    return {
        "accuracy": pct(sum(scores), len(scores)),
        "total": len(scores),
        "unmatched_answers": len(unmatched),
    }


def main(argv: list[str] | None = None) -> None:
    """CLI: score a TextVQA answer file against TextVQA_0.5.1_val.json."""
    ap = argparse.ArgumentParser(description="TextVQA val accuracy (LLaVA eval_textvqa protocol).")
    ap.add_argument("--answers", required=True, help="answer JSONL")
    ap.add_argument("--annotation-file", required=True, help="TextVQA_0.5.1_val.json")
    ap.add_argument("--no-strict", dest="strict", action="store_false",
                    help="skip (but count) answers with no annotation instead of failing")
    add_result_args(ap)
    args = ap.parse_args(argv)
    refuse_overwrite({"--output-json": args.output_json},
                     {"--answers": args.answers, "--annotation-file": args.annotation_file})
    metrics = score_textvqa(read_jsonl(args.answers), read_json(args.annotation_file)["data"], args.strict)
    finish_cli(args, BENCHMARK, metrics)


if __name__ == "__main__":
    main()
