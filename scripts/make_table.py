"""Build the VisionDrop Table-1 layout (Markdown) from a folder of result JSONs.

Usage: python scripts/make_table.py RESULTS_DIR [--out table.md] [--model NAME]
Rows are (method, budget, variant) with the unpruned `none` row first; columns and metrics come from
`llava.eval.scoring.results.TABLE_COLUMNS`; `Avg.` is the mean over available columns of
value / unpruned × 100%.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llava.eval.scoring.results import TABLE_COLUMNS, load_results  # noqa: E402

EMPTY = "–"
RowKey = tuple[str, Any, str]  # (method, budget, the method's variant from the record's config)


def _value(record: dict[str, Any], metric: str) -> float | None:
    """The record's value for a metric (main_value as fallback when it is the main metric)."""
    if metric in record["metrics"]:
        return float(record["metrics"][metric])
    if record.get("main_metric") == metric and record.get("main_value") is not None:
        return float(record["main_value"])
    return None


def collect(records: Iterable[dict[str, Any]]) -> dict[str, dict[RowKey, dict[str, float]]]:
    """{model: {(method, budget): {column: value}}}; for duplicates the most recently created record wins."""
    by_bench = {bench: (col, metric) for col, (bench, metric, _, _) in TABLE_COLUMNS.items()}
    table: dict[str, dict[RowKey, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    stamp: dict[tuple, str] = {}
    for rec in records:
        if rec["benchmark"] not in by_bench:
            continue
        col, metric = by_bench[rec["benchmark"]]
        value = _value(rec, metric)
        if value is None:
            continue
        variant = str((rec.get("config") or {}).get("variant") or "")
        model, row = str(rec.get("model") or ""), (str(rec.get("method") or "unknown"), rec.get("budget"), variant)
        key, created = (model, row, col), str(rec.get("created", ""))
        if key in stamp and stamp[key] > created:
            continue
        stamp[key] = created
        table[model][row][col] = value
        if rec.get("visual_tokens_mean") is not None:  # measured visual tokens per layer (latest record)
            table[model][row]["B"] = float(rec["visual_tokens_mean"])
    return {m: dict(rows) for m, rows in table.items()}


def _order(rows: Iterable[RowKey]) -> list[RowKey]:
    """Unpruned (`none`) rows first, then by budget (largest first, missing last) and method name."""
    def key(row: RowKey) -> tuple:
        method, budget, _ = row
        has_budget = isinstance(budget, (int, float))
        return (method.lower() != "none", not has_budget, -budget if has_budget else 0, method)
    return sorted(rows, key=key)


def relative_average(values: dict[str, float], reference: dict[str, float] | None) -> float | None:
    """Mean over columns present in both rows of value / reference × 100 (None when nothing to compare)."""
    if not reference:
        return None
    ratios = [100.0 * v / reference[c] for c, v in values.items() if c in TABLE_COLUMNS and reference.get(c)]
    return sum(ratios) / len(ratios) if ratios else None


def render(rows: dict[RowKey, dict[str, float]]) -> str:
    """One Markdown table for one model."""
    ordered = _order(rows)
    reference = next((rows[r] for r in ordered if r[0].lower() == "none"), None)
    cols = list(TABLE_COLUMNS)
    lines = ["| Method | Tokens | Variant | " + " | ".join(cols) + " | Avg. |",
             "|---|---:|---|" + "---:|" * (len(cols) + 1)]
    for row in ordered:
        method, budget, variant = row
        measured = f"B {rows[row]['B']:.2f}" if "B" in rows[row] else ""
        label = "; ".join(filter(None, [variant, measured])) or EMPTY
        cells = [method, EMPTY if budget is None else str(budget), label]
        for col in cols:
            value = rows[row].get(col)
            cells.append(EMPTY if value is None else format(value, TABLE_COLUMNS[col][2]))
        avg = relative_average(rows[row], reference)
        cells.append(EMPTY if avg is None else f"{avg:.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def footnote() -> str:
    """Which metric each column shows."""
    parts = [f"{col} = {desc} (`{bench}.{metric}`)"
             for col, (bench, metric, _, desc) in TABLE_COLUMNS.items()]
    return ("Columns: " + "; ".join(parts) + ". SQA shows IMG-Accuracy; the overall accuracy is "
            "`metrics.accuracy` in the scienceqa result JSON. Avg. = mean over the available columns of "
            f"value / unpruned (`none`) value × 100%. Variant = the method's named options (docs/baselines.md, "
            f"Fairness) and B = its measured visual tokens per layer. {EMPTY} = no result.")


def build_table(records: Iterable[dict[str, Any]], model: str | None = None) -> str:
    """Markdown for all models (one section each when there are several) plus the footnote."""
    data = collect(records)
    if model is not None:
        data = {m: r for m, r in data.items() if m == model}
    if not data:
        return "(no results)\n"
    sections = []
    for name in sorted(data):
        head = f"### {name or '(model not recorded)'}\n\n" if len(data) > 1 else ""
        sections.append(head + render(data[name]))
    return "\n\n".join(sections) + "\n\n" + footnote() + "\n"


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description="Render the VisionDrop Table-1 layout from result JSONs.")
    ap.add_argument("results_dir", help="folder searched recursively for result JSONs")
    ap.add_argument("--out", default=None, help="also write the Markdown here")
    ap.add_argument("--model", default=None, help="only this model")
    args = ap.parse_args(argv)
    text = build_table(load_results(args.results_dir), args.model)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
