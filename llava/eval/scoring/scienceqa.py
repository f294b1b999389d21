"""ScienceQA (docs/pipeline.md, 'ScienceQA'): letter parsing, Accuracy and IMG-Accuracy from llava_test_CQM-A.json."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping
from typing import Any

from llava.eval.scoring.common import pct, read_json, read_jsonl, refuse_overwrite, write_jsonl
from llava.eval.scoring.results import add_result_args, finish_cli

BENCHMARK = "scienceqa"
OPTIONS = ("A", "B", "C", "D", "E")
ANSWER_RE = re.compile(r"The answer is ([A-Z]).")


def parse_letter(text: str) -> str:
    """Reference parse: exact A–E; else 'X. …'; else a single 'The answer is X.' match; else 'FAILED'."""
    if text in OPTIONS:
        return text
    if len(text) >= 3 and text[0] in OPTIONS and text[1:3] == ". ":
        return text[0]
    found = ANSWER_RE.findall(text)
    return found[0] if len(found) == 1 else "FAILED"


def count_choices(human_text: str) -> int:
    """Options in a CQM-A human turn: from the last line 'A. …', count lines 'B. …', 'C. …' in order."""
    lines = human_text.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("A. ") or line == "A."]
    if not starts:
        return 0
    n = 1
    for line in lines[starts[-1] + 1:]:
        letter = chr(ord("A") + n)
        if line.startswith(letter + ". ") or line == letter + ".":
            n += 1
    return n


def problems_from_cqm(data: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """llava_test_CQM-A.json entries → {id: {"answer": gold letter, "n_choices", "has_image"}}."""
    problems = {}
    for item in data:
        human, gpt = item["conversations"][0]["value"], item["conversations"][1]["value"]
        problems[str(item["id"])] = {
            "answer": gpt.strip(), "n_choices": count_choices(human), "has_image": "image" in item,
        }
    return problems


def problems_from_scienceqa(problems: Mapping[str, Mapping[str, Any]], ids: Iterable[str]) -> dict[str, dict]:
    """ScienceQA `problems.json` entries of a split (`pid_splits.json`) in the form `score_scienceqa` takes."""
    out = {}
    for pid in ids:
        prob = problems[pid]
        out[str(pid)] = {"answer": OPTIONS[prob["answer"]], "n_choices": len(prob["choices"]),
                         "has_image": bool(prob.get("image"))}
    return out


def score_scienceqa(answers: Iterable[Mapping[str, Any]], problems: Mapping[str, Mapping[str, Any]]) -> dict:
    """Accuracy and IMG-Accuracy (%) over all problems; missing answers count as FAILED.

    An answer is an image problem when its `prompt` starts with `<image>` (the problem's image field is used
    for problems without an answer). A parsed letter beyond the problem's choices is wrong.
    """
    by_id = {str(a["question_id"]): a for a in answers}
    total = correct = img_total = img_correct = failed = out_of_range = 0
    details = []
    for pid, prob in problems.items():
        ans = by_id.get(pid)
        letter = parse_letter(ans["text"]) if ans is not None else "FAILED"
        failed += letter == "FAILED"
        in_range = letter in OPTIONS[: prob["n_choices"]]
        out_of_range += letter != "FAILED" and not in_range
        ok = in_range and letter == prob["answer"]
        is_img = ans["prompt"].startswith("<image>") if ans is not None else bool(prob["has_image"])
        total += 1
        correct += ok
        img_total += is_img
        img_correct += ok and is_img
        details.append({"question_id": pid, "parsed": letter, "gold": prob["answer"], "correct": ok,
                        "image": is_img, "choice": OPTIONS.index(letter) if in_range else -1,
                        "text": ans["text"] if ans is not None else "FAILED",
                        "prompt": ans["prompt"] if ans is not None else "Unknown"})
    return {
        "accuracy": pct(correct, total),
        "img_accuracy": pct(img_correct, img_total),
        "total": total, "correct": correct, "img_total": img_total, "img_correct": img_correct,
        "failed_parses": failed, "out_of_range": out_of_range,
        "missing_answers": sum(1 for pid in problems if pid not in by_id),
        "details": details,
    }


def main(argv: list[str] | None = None) -> None:
    """CLI: score a ScienceQA answer file."""
    ap = argparse.ArgumentParser(description="ScienceQA Accuracy and IMG-Accuracy (LLaVA protocol).")
    ap.add_argument("--answers", required=True, help="answer JSONL")
    ap.add_argument("--question-file", required=True, help="llava_test_CQM-A.json")
    ap.add_argument("--output-file", default=None, help="per-problem parse results (JSONL)")
    add_result_args(ap)
    args = ap.parse_args(argv)
    refuse_overwrite({"--output-file": args.output_file, "--output-json": args.output_json},
                     {"--answers": args.answers, "--question-file": args.question_file})
    metrics = score_scienceqa(read_jsonl(args.answers), problems_from_cqm(read_json(args.question_file)))
    details = metrics.pop("details")
    if args.output_file:
        write_jsonl(args.output_file, details)
    finish_cli(args, BENCHMARK, metrics)


if __name__ == "__main__":
    main()
