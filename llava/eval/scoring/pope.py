"""POPE (docs/pipeline.md, 'POPE'): match answers to labels by (category, image, question), score per split."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llava.eval.scoring.common import pct, read_jsonl, refuse_overwrite
from llava.eval.scoring.results import add_result_args, finish_cli

BENCHMARK = "pope"


def parse_pope_answer(text: str) -> str:
    """Reference rule: text before the first '.', no commas, split on ' '; No/no/not → no, else yes."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def normalize_question(text: str) -> str:
    """Question text before the first newline, stripped, with the `imange` typo fixed."""
    return text.split("\n")[0].strip().replace("imange", "image")


def load_label_dir(label_dir: str | Path) -> dict[str, list[dict]]:
    """Read `coco_pope_{category}.json` label files (JSON lines) → {category: rows}."""
    labels = {}
    for path in sorted(Path(label_dir).glob("*_pope_*.json")):
        labels[path.stem.rsplit("_pope_", 1)[1]] = read_jsonl(path)
    if not labels:
        raise FileNotFoundError(f"no *_pope_*.json label files in {label_dir}")
    return labels


def _binary_metrics(preds: list[str], gts: list[str]) -> dict[str, float]:
    """Accuracy / precision / recall / F1 / yes-ratio (all %) with positive = yes."""
    tp = sum(p == "yes" and g == "yes" for p, g in zip(preds, gts))
    tn = sum(p == "no" and g == "no" for p, g in zip(preds, gts))
    fp = sum(p == "yes" and g == "no" for p, g in zip(preds, gts))
    fn = sum(p == "no" and g == "yes" for p, g in zip(preds, gts))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": len(preds), "tp": tp, "tn": tn, "fp": fp, "fn": fn,
        "accuracy": pct(tp + tn, len(preds)), "precision": 100.0 * precision, "recall": 100.0 * recall,
        "f1": 100.0 * f1, "yes_ratio": pct(preds.count("yes"), len(preds)),
    }


def score_pope(answers: Iterable[Mapping[str, Any]], questions: Iterable[Mapping[str, Any]],
               labels: Mapping[str, Iterable[Mapping[str, Any]]], strict: bool = False) -> dict:
    """Per-category acc/P/R/F1/yes-ratio (%), mean accuracy and mean F1, plus matching counts.

    The image and category of an answer come from the question file (by `question_id`); the question text from
    the answer's `prompt` (question text as fallback). Unmatched answers are counted and excluded; with
    ``strict`` any unmatched answer raises ValueError.
    """
    qindex = {q["question_id"]: q for q in questions}
    label_index: dict[str, dict[tuple[str, str], Mapping[str, Any]]] = {}
    for cat, rows in labels.items():
        label_index[cat] = {(r["image"], normalize_question(r["text"])): r for r in rows}
    used: dict[str, set] = {cat: set() for cat in label_index}
    preds: dict[str, list[str]] = {cat: [] for cat in label_index}
    gts: dict[str, list[str]] = {cat: [] for cat in label_index}
    unmatched, duplicates = [], 0
    for ans in answers:
        q = qindex.get(ans["question_id"])
        cat = q.get("category") if q else None
        if q is None or cat not in label_index:
            unmatched.append(ans["question_id"])
            continue
        key = (q["image"], normalize_question(ans.get("prompt", q["text"])))
        label = label_index[cat].get(key)
        if label is None:
            unmatched.append(ans["question_id"])
            continue
        duplicates += key in used[cat]
        used[cat].add(key)
        preds[cat].append(parse_pope_answer(ans["text"]))
        gts[cat].append(str(label["label"]).strip().lower())
    if strict and unmatched:
        raise ValueError(f"{len(unmatched)} POPE answers have no label, e.g. question_ids {unmatched[:5]}")
    categories = {cat: _binary_metrics(preds[cat], gts[cat]) for cat in sorted(label_index) if preds[cat]}
    unused = {cat: len(label_index[cat]) - len(used[cat]) for cat in sorted(label_index)}
    n_cat = len(categories)
    return {
        "mean_accuracy": sum(c["accuracy"] for c in categories.values()) / n_cat if n_cat else 0.0,
        "mean_f1": sum(c["f1"] for c in categories.values()) / n_cat if n_cat else 0.0,
        "categories": categories,
        "answers": sum(c["n"] for c in categories.values()) + len(unmatched),
        "unmatched_answers": len(unmatched),
        "unmatched_question_ids": unmatched[:20],
        "duplicate_answers": duplicates,
        "unused_labels": sum(unused.values()),
        "unused_labels_per_category": unused,
    }


def main(argv: list[str] | None = None) -> None:
    """CLI: score a POPE answer file."""
    ap = argparse.ArgumentParser(description="POPE scorer matching answers to labels by image + question.")
    ap.add_argument("--answers", required=True, help="answer JSONL")
    ap.add_argument("--question-file", required=True, help="llava_pope_test.jsonl")
    ap.add_argument("--annotation-dir", required=True, help="folder with coco_pope_{category}.json")
    ap.add_argument("--no-strict", dest="strict", action="store_false",
                    help="count unmatched answers instead of failing (strict is the default)")
    add_result_args(ap)
    args = ap.parse_args(argv)
    refuse_overwrite({"--output-json": args.output_json},
                     {"--answers": args.answers, "--question-file": args.question_file})
    metrics = score_pope(read_jsonl(args.answers), read_jsonl(args.question_file),
                         load_label_dir(args.annotation_dir), strict=args.strict)
    for cat, m in metrics["categories"].items():
        print(f"{cat:12s} n={m['n']:5d} acc={m['accuracy']:.2f} P={m['precision']:.2f} R={m['recall']:.2f} "
              f"F1={m['f1']:.2f} yes={m['yes_ratio']:.2f}")
    finish_cli(args, BENCHMARK, metrics)


if __name__ == "__main__":
    main()
