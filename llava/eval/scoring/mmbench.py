"""MMBench / MMBench-CN (docs/pipeline.md, 'MMBench'): heuristic choice extraction, CircularEval, submission file."""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llava.eval.scoring.common import pct, read_jsonl, refuse_overwrite
from llava.eval.scoring.results import add_result_args, finish_cli
from llava.eval.scoring.xlsx import write_xlsx

LETTERS = ("A", "B", "C", "D")
ROTATION = 1_000_000
DROP_COLUMNS = ("hint", "category", "source", "image", "comment", "l2-category")
_PUNCT = re.compile(r"[.()\[\],:;!*#{}。，：；！（）]")


def read_tsv(path: str | Path) -> list[dict[str, str]]:
    """Read an MMBench TSV (pandas-written; large base64 image fields allowed)."""
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def row_options(row: Mapping[str, Any]) -> dict[str, str]:
    """Options A..D up to the first empty one (pandas NaN → '' or 'nan')."""
    opts = {}
    for letter in LETTERS:
        value = str(row.get(letter) or "").strip()
        if not value or value.lower() == "nan":
            break
        opts[letter] = value
    return opts


def extract_choice(text: str, options: Mapping[str, str]) -> str | None:
    """Letter from a prediction via the offline heuristics, or None when a GPT matcher would be needed."""
    text = text.strip()
    valid = set(options)
    if text in valid:
        return text
    m = re.match(r"^\(?([A-Z])(?:[.,:)]|\s*$)", text)  # "A.", "A,", "A:", "A)", "(A)"
    if m and m.group(1) in valid:
        return m.group(1)
    tokens = _PUNCT.sub(" ", text).split()
    found = {t for t in tokens if t in valid}
    if len(found) == 1:
        letter = found.pop()
        if not (letter == "A" and len(tokens) > 3):  # "A" may be an article in a sentence
            return letter
    lower = text.lower()
    hits = [k for k, v in options.items() if v.lower() in lower]
    return hits[0] if len(hits) == 1 else None


def circular_eval(rows: Iterable[Mapping[str, Any]], answers: Iterable[Mapping[str, Any]]) -> dict:
    """CircularEval (%) on a dev TSV with answers: a base question counts only if every rotation is right."""
    preds = {int(a["question_id"]): str(a["text"]) for a in answers}
    per_base: dict[int, list[bool]] = defaultdict(list)
    base_category: dict[int, str] = {}
    missing = fallback = single_correct = single_total = 0
    for row in rows:
        index = int(row["index"])
        base = index % ROTATION
        options = row_options(row)
        pred = preds.get(index)
        letter = None
        if pred is None:
            missing += 1
        else:
            letter = extract_choice(pred, options)
            fallback += letter is None
        ok = letter is not None and letter == str(row["answer"]).strip()
        per_base[base].append(ok)
        if index < ROTATION:
            single_total += 1
            single_correct += ok
            base_category[base] = str(row.get("category", ""))
    n_base = len(per_base)
    correct = sum(all(v) for v in per_base.values())
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for base, cat in base_category.items():
        by_cat[cat].append(all(per_base[base]))
    return {
        "circular_accuracy": pct(correct, n_base),
        "single_pass_accuracy": pct(single_correct, single_total),
        "base_questions": n_base, "rows": sum(len(v) for v in per_base.values()),
        "missing_rows": missing, "gpt_fallback_rows": fallback,
        "categories": {c: pct(sum(v), len(v)) for c, v in sorted(by_cat.items()) if c},
    }


def _typed(values: list[str]) -> list[Any]:
    """A TSV column as pandas reads it: all integers -> int, all numbers -> float, else str; '' -> empty."""
    for kind in (int, float):
        try:
            return [kind(v) if v != "" else None for v in values]
        except ValueError:
            continue
    return [v if v != "" else None for v in values]


def submission_table(rows: list[Mapping[str, Any]],
                     answers: Iterable[Mapping[str, Any]]) -> tuple[list, list]:
    """Reference conversion: drop DROP_COLUMNS, insert `prediction` as column 6 (filled by `index`; the last
    answer of an index wins, as with `--all-rounds` there), TSV columns typed as pandas types them."""
    if not rows:
        return [], []
    kept = [c for c in rows[0] if c not in DROP_COLUMNS]
    columns = {c: _typed([str(r.get(c) or "") for r in rows]) for c in kept}
    preds = {str(a["question_id"]): a["text"] for a in answers}
    columns_out = list(kept)
    columns_out.insert(min(6, len(kept)), "prediction")
    columns["prediction"] = [preds.get(str(r["index"])) for r in rows]
    return columns_out, [[columns[c][i] for c in columns_out] for i in range(len(rows))]


def write_submission(rows: list[Mapping[str, Any]], answers: Iterable[Mapping[str, Any]],
                     out_path: str | Path) -> Path:
    """Write the `.xlsx` upload file (the suffix is forced to .xlsx); return its path."""
    columns, table = submission_table(rows, answers)
    return write_xlsx(Path(out_path).with_suffix(".xlsx"), columns, table)


def main(argv: list[str] | None = None) -> None:
    """CLI: CircularEval on a dev TSV and/or write the submission file."""
    ap = argparse.ArgumentParser(description="MMBench(-CN) CircularEval (dev) and submission conversion.")
    ap.add_argument("--answers", required=True, help="answer JSONL")
    ap.add_argument("--annotation-file", required=True, help="MMBench TSV (dev with answers, or test)")
    ap.add_argument("--benchmark", default="mmbench", choices=("mmbench", "mmbench_cn"))
    ap.add_argument("--upload-file", default=None, help="submission path (.xlsx)")
    add_result_args(ap)
    args = ap.parse_args(argv)
    refuse_overwrite({"--upload-file": args.upload_file, "--output-json": args.output_json},
                     {"--answers": args.answers, "--annotation-file": args.annotation_file})
    rows, answers = read_tsv(args.annotation_file), read_jsonl(args.answers)
    if args.upload_file:
        print(f"wrote {write_submission(rows, answers, args.upload_file)}")
    if rows and "answer" in rows[0] and all(str(r.get("answer") or "").strip() for r in rows):
        finish_cli(args, args.benchmark, circular_eval(rows, answers))
    else:
        print("no answers in the TSV (test split): submission only, no local score")


if __name__ == "__main__":
    main()
