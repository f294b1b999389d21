"""Build the VisionDrop Table-1 layout (Markdown) from a folder of result JSONs.

Usage: python scripts/make_table.py RESULTS_DIR [--out table.md] [--model NAME] [--table 3]
`--table 3`: the video QA table (Acc / Score of TGIF, MSVD, MSRVTT and their averages, one row per run folder).
Every distinct (model, full pruning config) is its own row, the unpruned `none` row first; a run whose config
differs from its config file (an ablation, `--set ...`) is named by the keys that differ, e.g.
`visiondrop (merge=false)`. `Tokens` is the nominal budget, `Measured` the measured mean visual tokens per LLM
layer. Columns and metrics come from `llava.eval.scoring.results.TABLE_COLUMNS`; `Avg.` is the mean over available
columns of value / unpruned × 100%. Two records for one cell with different values, an unreadable result JSON, or
a missing / empty folder are errors naming the files (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llava.eval.run_guard import config_hash  # noqa: E402
from llava.eval.scoring.results import TABLE_COLUMNS, ResultsError, load_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EMPTY = "–"
MIXED = "(*)"  # a row whose cells come from more than one code version
IGNORED_KEYS = ("note", "source", "variant")  # config keys that do not change answers (variant: derived)


class TableError(ValueError):
    """Results that cannot be tabulated as they are (the message names the files)."""


@dataclass
class Row:
    """One table row: a (model, config) identity, its label parts and its cells."""

    method: str
    budget: Any
    config: dict | None
    config_file: str | None
    cells: dict[str, float] = field(default_factory=dict)
    sources: dict[str, dict] = field(default_factory=dict)  # column -> the record the cell came from
    measured: list[float] = field(default_factory=list)
    code_versions: set[str] = field(default_factory=set)
    label: str = ""


def _value(record: dict[str, Any], metric: str) -> float | None:
    """The record's value for a metric (main_value as fallback when it is the main metric)."""
    if metric in record["metrics"]:
        return float(record["metrics"][metric])
    if record.get("main_metric") == metric and record.get("main_value") is not None:
        return float(record["main_value"])
    return None


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """{'options': {'llm': {'merge': False}}} -> {'llm.merge': False} (the 'options.' level dropped)."""
    flat = {}
    for key, value in config.items():
        if key in IGNORED_KEYS:
            continue
        name = key if key == "options" and not prefix else f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, "" if name == "options" else f"{name}."))
        else:
            flat[name] = value
    return flat


def base_config(config_file: str | None) -> dict | None:
    """The validated config of a record's config file (looked up under configs/ of this repository when the
    recorded path does not exist here); None when it cannot be read."""
    from visiondrop.config import ConfigError, load_config

    if not config_file:
        return None
    path = Path(config_file)
    for candidate in (path, REPO / "configs" / path.parent.name / path.name):
        if candidate.is_file():
            try:
                return load_config(candidate).to_dict()
            except ConfigError:
                return None
    return None


def _show(value: Any) -> str:
    """A config value as it is written in an override (false, [8,16,24])."""
    return json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value


def variant_of(row: Row) -> str:
    """The method's named variant of a row's config (EMPTY when it has none)."""
    return str((row.config or {}).get("variant") or EMPTY)


def label_rows(rows: list[Row]) -> None:
    """Name each row by its method plus the config keys that differ from its config file; make labels unique."""
    for row in rows:
        base = base_config(row.config_file) if row.config is not None else None
        row.label = row.method
        if row.config is not None and base is not None:
            mine, ref = flatten(row.config), flatten(base)
            diff = [f"{k}={_show(mine.get(k))}" for k in sorted(set(mine) | set(ref)) if mine.get(k) != ref.get(k)]
            if diff:
                row.label += f" ({', '.join(diff)})"
    seen: dict[tuple, int] = {}  # rows told apart by their Variant column need no config hash
    for row in rows:
        seen[row.label, variant_of(row)] = seen.get((row.label, variant_of(row)), 0) + 1
    for row in rows:
        if seen[row.label, variant_of(row)] > 1 and row.config is not None:
            row.label += f" [config {config_hash(row.config)}]"


def _identity(rec: dict[str, Any]) -> tuple:
    """Row identity of a record: the model and its full config (or method and budget for hand-made records)."""
    config = rec.get("config")
    if isinstance(config, dict) and config:
        config = {k: v for k, v in config.items() if k not in IGNORED_KEYS}
        return str(rec.get("model") or ""), json.dumps(config, sort_keys=True)
    return str(rec.get("model") or ""), str(rec.get("method") or "unknown"), json.dumps(rec.get("budget"))


def collect(records: Iterable[dict[str, Any]]) -> dict[str, list[Row]]:
    """{model: [rows]}; two records for one cell must agree, else a TableError names both files."""
    by_bench = {bench: (col, metric) for col, (bench, metric, _, _) in TABLE_COLUMNS.items()}
    rows: dict[tuple, Row] = {}
    for rec in records:
        if rec["benchmark"] not in by_bench:
            continue
        col, metric = by_bench[rec["benchmark"]]
        value = _value(rec, metric)
        if value is None:
            continue
        key = _identity(rec)
        if key not in rows:
            config = rec.get("config") if isinstance(rec.get("config"), dict) and rec.get("config") else None
            rows[key] = Row(str(rec.get("method") or "unknown"), rec.get("budget"), config, rec.get("config_file"))
        row = rows[key]
        if col in row.cells and row.cells[col] != value:
            other = row.sources[col]
            raise TableError(f"two results for {row.method} {col} with one config: {other.get('_path')} "
                             f"({row.cells[col]}) and {rec.get('_path')} ({value}); move one of them out of the "
                             "folder, or rerun with another config / RUN_NAME")
        row.cells[col], row.sources[col] = value, rec
        if isinstance(rec.get("visual_tokens_mean"), (int, float)):
            row.measured.append(float(rec["visual_tokens_mean"]))
        if rec.get("code_version"):
            row.code_versions.add(str(rec["code_version"]))
    table: dict[str, list[Row]] = {}
    for key, row in rows.items():
        table.setdefault(key[0], []).append(row)
    for model_rows in table.values():
        label_rows(model_rows)
    return table


def _order(rows: Iterable[Row]) -> list[Row]:
    """Unpruned (`none`) rows first, then by budget (largest first, missing last), method and label."""
    def key(row: Row) -> tuple:
        has_budget = isinstance(row.budget, (int, float))
        return (row.method.lower() != "none", not has_budget, -row.budget if has_budget else 0, row.method,
                row.label != row.method, row.label)
    return sorted(rows, key=key)


def relative_average(values: dict[str, float], reference: dict[str, float] | None) -> float | None:
    """Mean over columns present in both rows of value / reference × 100 (None when nothing to compare)."""
    if not reference:
        return None
    ratios = [100.0 * v / reference[c] for c, v in values.items() if reference.get(c)]
    return sum(ratios) / len(ratios) if ratios else None


def measured_cell(values: list[float]) -> str:
    """Measured mean visual tokens of a row: one number, or the range over its benchmarks when they differ."""
    if not values:
        return EMPTY
    low, high = min(values), max(values)
    return f"{low:.1f}" if high - low < 0.05 else f"{low:.1f}–{high:.1f}"


def render(rows: list[Row]) -> str:
    """One Markdown table for one model."""
    ordered = _order(rows)
    reference = next((r.cells for r in ordered if r.method.lower() == "none"), None)
    cols = list(TABLE_COLUMNS)
    lines = ["| Method | Tokens | Measured | Variant | " + " | ".join(cols) + " | Avg. |",
             "|---|---:|---:|---|" + "---:|" * (len(cols) + 1)]
    for row in ordered:
        mark = f" {MIXED}" if len(row.code_versions) > 1 else ""
        cells = [row.label + mark, EMPTY if row.budget is None else str(row.budget), measured_cell(row.measured),
                 variant_of(row)]
        for col in cols:
            value = row.cells.get(col)
            cells.append(EMPTY if value is None else format(value, TABLE_COLUMNS[col][2]))
        avg = relative_average(row.cells, reference)
        cells.append(EMPTY if avg is None else f"{avg:.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def footnote() -> str:
    """Which metric each column shows, and what the marks mean."""
    parts = [f"{col} = {desc} (`{bench}.{metric}`)"
             for col, (bench, metric, _, desc) in TABLE_COLUMNS.items()]
    return ("Columns: " + "; ".join(parts) + ". SQA shows IMG-Accuracy; the overall accuracy is "
            "`metrics.accuracy` in the scienceqa result JSON. Tokens = nominal visual-token budget; Measured = "
            "measured mean visual tokens per LLM layer (a range when the benchmarks differ); Variant = the "
            "method's named numerics / release options (docs/baselines.md). Avg. = mean over the "
            f"available columns of value / unpruned (`none`) value × 100%. {EMPTY} = no result; {MIXED} = the row's "
            "results come from different code versions (`code_version` in their result JSONs).")


def build_table(records: Iterable[dict[str, Any]], model: str | None = None) -> str:
    """Markdown for all models (one section each when there are several) plus the footnote."""
    data = collect(records)
    if model is not None:
        if model not in data:
            raise TableError(f"no results for --model {model} (models with results: {', '.join(sorted(data))})")
        data = {model: data[model]}
    if not data:
        raise TableError("no result of a table benchmark among the result JSONs")
    sections = []
    for name in sorted(data):
        head = f"### {name or '(model not recorded)'}\n\n" if len(data) > 1 else ""
        sections.append(head + render(data[name]))
    return "\n\n".join(sections) + "\n\n" + footnote() + "\n"


VIDEO_COLUMNS = {"TGIF": "tgif", "MSVD": "msvd", "MSRVTT": "msrvtt"}  # Table 3: judge results per run folder


def build_video_table(folder: Path) -> str:
    """Table 3: per run folder (`results/<run>/{tgif,msvd,msrvtt}.json` of the video scripts) Acc / Score per
    dataset and their averages over the datasets present."""
    lines = ["| Run | " + " | ".join(f"{c} Acc | {c} Score" for c in VIDEO_COLUMNS) + " | Avg. Acc | Avg. Score |",
             "|---|" + "---:|" * (2 * len(VIDEO_COLUMNS) + 2)]
    runs = sorted({p.parent for name in VIDEO_COLUMNS.values() for p in folder.rglob(f"{name}.json")})
    if not runs:
        raise TableError(f"no video QA results (tgif / msvd / msrvtt.json) under {folder}")
    for run in runs:
        cells, accs, scores = [], [], []
        for name in VIDEO_COLUMNS.values():
            path = run / f"{name}.json"
            if not path.is_file():
                cells += [EMPTY, EMPTY]
                continue
            try:
                result = json.loads(path.read_text())
                acc, score = float(result["accuracy"]), float(result["score"])
            except (ValueError, KeyError, TypeError) as err:
                raise TableError(f"{path}: not a video judge result ({err})") from None
            accs.append(acc)
            scores.append(score)
            cells += [f"{acc:.1f}", f"{score:.2f}"]
        cells += [f"{sum(accs) / len(accs):.1f}", f"{sum(scores) / len(scores):.2f}"]
        lines.append(f"| {run.relative_to(folder)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit status 2 with one line naming the file on unusable results."""
    ap = argparse.ArgumentParser(description="Render the VisionDrop Table-1 layout from result JSONs.")
    ap.add_argument("results_dir", help="folder searched recursively for result JSONs")
    ap.add_argument("--out", default=None, help="also write the Markdown here")
    ap.add_argument("--model", default=None, help="only this model")
    ap.add_argument("--table", type=int, choices=(1, 3), default=1, help="1: image benchmarks; 3: video QA")
    args = ap.parse_args(argv)
    folder = Path(args.results_dir)
    try:
        if not folder.is_dir():
            raise TableError(f"results folder {folder} not found (the scripts write to results/<run>/, or "
                             "$RESULTS_ROOT/<run>/)")
        if args.table == 3:
            text = build_video_table(folder)
        else:
            records = load_results(folder)
            if not records:
                raise TableError(f"no result JSONs under {folder} (a result JSON has 'benchmark' and 'metrics')")
            text = build_table(records, args.model)
    except (TableError, ResultsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
