"""LLaVA's POPE evaluator command line, printing its per-category report; scoring is `llava.eval.scoring.pope`
(answers matched to labels by image + question rather than by position).

    python llava/eval/eval_pope.py --annotation-dir pope/coco --question-file llava_pope_test.jsonl \\
        --result-file answers.jsonl
"""

from __future__ import annotations

import argparse
import sys

from llava.eval.scoring.common import read_jsonl
from llava.eval.scoring.pope import load_label_dir, score_pope


def report(metrics: dict) -> str:
    """The reference printout: per category counts, accuracy, precision, recall, F1, yes ratio (fractions)."""
    out = []
    for category, m in metrics["categories"].items():
        acc, precision, recall, f1, yes = (m[k] / 100 for k in ("accuracy", "precision", "recall", "f1", "yes_ratio"))
        out += [f"Category: {category}, # samples: {m['n']}", "TP\tFP\tTN\tFN\t",
                f"{m['tp']}\t{m['fp']}\t{m['tn']}\t{m['fn']}", f"Accuracy: {acc}", f"Precision: {precision}",
                f"Recall: {recall}", f"F1 score: {f1}", f"Yes ratio: {yes}",
                f"{f1:.3f}, {acc:.3f}, {precision:.3f}, {recall:.3f}, {yes:.3f}", "=" * 36]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Score a POPE answer file (`--result-file`, an input) per label file of `--annotation-dir`."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotation-dir", required=True, help="folder with coco_pope_{category}.json")
    ap.add_argument("--question-file", required=True, help="llava_pope_test.jsonl")
    ap.add_argument("--result-file", required=True, help="the answer JSONL to score")
    args = ap.parse_args(argv)
    try:
        metrics = score_pope(read_jsonl(args.result_file), read_jsonl(args.question_file),
                             load_label_dir(args.annotation_dir))
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report(metrics))
    if metrics["unmatched_answers"]:
        print(f"warning: {metrics['unmatched_answers']} answers match no label (e.g. question_ids "
              f"{metrics['unmatched_question_ids'][:5]}) and are not scored", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
