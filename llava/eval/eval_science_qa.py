"""LLaVA's ScienceQA evaluator command line and output files; scoring is `llava.eval.scoring.scienceqa`.

    python llava/eval/eval_science_qa.py --base-dir scienceqa --result-file answers.jsonl \\
        --output-file answers_output.jsonl --output-result answers_result.json
`--base-dir` holds ScienceQA's `problems.json` and `pid_splits.json`; `--result-file` is the answer file (an input).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llava.eval.scoring.common import read_json, read_jsonl, refuse_overwrite, write_json
from llava.eval.scoring.scienceqa import problems_from_scienceqa, score_scienceqa


def official_outputs(metrics: dict, details: list[dict]) -> tuple[dict, dict]:
    """(--output-file content: correct / incorrect analyses, --output-result content: acc, counts, per problem)."""
    analyses = {"correct": [], "incorrect": []}
    for d in details:
        analyses["correct" if d["correct"] else "incorrect"].append(
            {"question_id": d["question_id"], "parsed_ans": d["parsed"], "ground_truth": d["gold"],
             "question": d["prompt"], "pred": d["text"], "is_multimodal": d["image"]})
    result = {"acc": metrics["accuracy"], "correct": metrics["correct"], "count": metrics["total"],
              "results": {d["question_id"]: d["choice"] for d in details},
              "outputs": {d["question_id"]: d["text"] for d in details}}
    return analyses, result


def main(argv: list[str] | None = None) -> int:
    """Score a ScienceQA answer file on a split of problems.json; print and write LLaVA's two output files."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-dir", required=True, help="folder with problems.json and pid_splits.json")
    ap.add_argument("--result-file", required=True, help="the answer JSONL to score")
    ap.add_argument("--output-file", required=True, help="per-problem analyses, split into correct / incorrect")
    ap.add_argument("--output-result", required=True, help="accuracy, counts, parsed choice and text per problem")
    ap.add_argument("--split", default="test")
    args = ap.parse_args(argv)
    refuse_overwrite({"--output-file": args.output_file, "--output-result": args.output_result},
                     {"--result-file": args.result_file})
    base = Path(args.base_dir)
    try:
        split = read_json(base / "pid_splits.json")[args.split]
        problems = problems_from_scienceqa(read_json(base / "problems.json"), split)
        answers = read_jsonl(args.result_file)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {type(err).__name__}: {err} (--base-dir needs ScienceQA's problems.json and pid_splits.json "
              f"with split {args.split!r}; --result-file the answer JSONL)", file=sys.stderr)
        return 2
    metrics = score_scienceqa(answers, problems)
    analyses, result = official_outputs(metrics, metrics.pop("details"))
    print(f"Total: {metrics['total']}, Correct: {metrics['correct']}, Accuracy: {metrics['accuracy']:.2f}%, "
          f"IMG-Accuracy: {metrics['img_accuracy']:.2f}%")
    write_json(args.output_file, analyses)
    write_json(args.output_result, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
