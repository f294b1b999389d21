"""MMBench / MMBench-CN (spec §7.2–7.3): heuristic choice extraction, CircularEval, submission file."""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llava.eval.scoring.common import pct, read_jsonl
from llava.eval.scoring.results import add_result_args, finish_cli

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


def submission_table(rows: list[Mapping[str, Any]],
                     answers: Iterable[Mapping[str, Any]]) -> tuple[list, list]:
    """Reference conversion: drop DROP_COLUMNS, insert `prediction` as column 6 (filled by `index`)."""
    if not rows:
        return [], []
    columns = [c for c in rows[0] if c not in DROP_COLUMNS]
    columns.insert(min(6, len(columns)), "prediction")
    preds = {str(a["question_id"]): a["text"] for a in answers}
    table = [[preds.get(str(r["index"]), "") if c == "prediction" else r[c] for c in columns] for r in rows]
    return columns, table


def write_submission(rows: list[Mapping[str, Any]], answers: Iterable[Mapping[str, Any]],
                     out_path: str | Path) -> Path:
    """Write `.xlsx` when openpyxl is importable, else a `.tsv` with the same columns; return the path."""
    columns, table = submission_table(rows, answers)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import openpyxl
    except ImportError:
        out_path = out_path.with_suffix(".tsv")
        with open(out_path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t")
            writer.writerow(columns)
            writer.writerows(table)
        print(f"openpyxl not importable: wrote TSV instead of xlsx ({out_path})", file=sys.stderr)
        return out_path
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(columns)
    for line in table:
        sheet.append(line)
    out_path = out_path.with_suffix(".xlsx")
    book.save(out_path)
    return out_path


def main(argv: list[str] | None = None) -> None:
    """CLI: CircularEval on a dev TSV and/or write the submission file."""
    ap = argparse.ArgumentParser(description="MMBench(-CN) CircularEval (dev) and submission conversion.")
    ap.add_argument("--answers", required=True, help="answer JSONL")
    ap.add_argument("--annotation-file", required=True, help="MMBench TSV (dev with answers, or test)")
    ap.add_argument("--benchmark", default="mmbench", choices=("mmbench", "mmbench_cn"))
    ap.add_argument("--upload-file", default=None, help="submission path (.xlsx; .tsv without openpyxl)")
    add_result_args(ap)
    args = ap.parse_args(argv)
    rows, answers = read_tsv(args.annotation_file), read_jsonl(args.answers)
    if args.upload_file:
        print(f"wrote {write_submission(rows, answers, args.upload_file)}")
    if rows and "answer" in rows[0] and all(str(r.get("answer") or "").strip() for r in rows):
        finish_cli(args, args.benchmark, circular_eval(rows, answers))
    else:
        print("no answers in the TSV (test split): submission only, no local score")


if __name__ == "__main__":
    main()
