"""Result-JSON records and the single table-column → (benchmark, metric) mapping used everywhere."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from pathlib import Path
from typing import Any

from llava.eval.scoring.common import write_json

SCHEMA_VERSION = 1

# ONE place: paper Table-1 column -> (benchmark key, metric key, number format, description).
TABLE_COLUMNS: dict[str, tuple[str, str, str, str]] = {
    "GQA": ("gqa", "accuracy", ".2f", "GQA test-dev balanced accuracy"),
    "MMB": ("mmbench", "circular_accuracy", ".2f", "MMBench CircularEval accuracy"),
    "MMB-CN": ("mmbench_cn", "circular_accuracy", ".2f", "MMBench-CN CircularEval accuracy"),
    "MME": ("mme", "perception_cognition", ".0f", "MME Perception + Cognition score"),
    "POPE": ("pope", "mean_accuracy", ".2f", "POPE mean accuracy over adversarial/popular/random"),
    "SQA": ("scienceqa", "img_accuracy", ".2f", "ScienceQA IMG-Accuracy"),
    "VQAv2": ("vqav2", "accuracy", ".2f", "VQAv2 test-dev VQA accuracy"),
    "VQAText": ("textvqa", "accuracy", ".2f", "TextVQA val accuracy (OCR tokens in prompt)"),
    "VizWiz": ("vizwiz", "accuracy", ".2f", "VizWiz test-dev VQA accuracy"),
}
# Benchmark key -> the metric the tables use; the scorers take `main_metric` from here.
MAIN_METRIC: dict[str, str] = {bench: metric for bench, metric, _, _ in TABLE_COLUMNS.values()}

RESERVED_KEYS = ("schema_version", "benchmark", "main_metric", "main_value", "metrics", "created")


def write_result(path: str | Path, benchmark: str, metrics: dict[str, Any], main_metric: str | None = None,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write one result record (benchmark, main metric + value, all metrics, extra fields) and return it."""
    main_metric = main_metric or MAIN_METRIC.get(benchmark)
    if main_metric is None:
        raise ValueError(f"no main metric given and none registered for benchmark {benchmark!r}")
    if main_metric not in metrics:
        raise KeyError(f"main metric {main_metric!r} not in metrics {sorted(metrics)}")
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"extra may not override reserved keys {clash}")
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "benchmark": benchmark,
        "main_metric": main_metric,
        "main_value": metrics[main_metric],
        "metrics": metrics,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(extra)
    write_json(path, record)
    return record


class ResultsError(ValueError):
    """A result folder that cannot be read as it is (the message names the file)."""


def load_results(directory: str | Path) -> list[dict[str, Any]]:
    """Load every result record (JSON object with `benchmark` and `metrics`) under a folder, recursively; a JSON
    file that cannot be parsed is a ResultsError naming it (other JSON files, e.g. upload files, are skipped)."""
    records = []
    for path in sorted(Path(directory).rglob("*.json")):
        if path.name.endswith(".run.json"):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
        except json.JSONDecodeError as err:
            raise ResultsError(f"result file {path}: not valid JSON (line {err.lineno} column {err.colno}: "
                               f"{err.msg}); fix it or move it out of the folder") from err
        except UnicodeDecodeError as err:
            raise ResultsError(f"result file {path}: not UTF-8 text ({err.reason}); fix it or move it out of "
                               "the folder") from err
        if isinstance(obj, dict) and "benchmark" in obj and isinstance(obj.get("metrics"), dict):
            obj["_path"] = str(path)
            records.append(obj)
    return records


def add_result_args(ap: argparse.ArgumentParser) -> None:
    """Add the shared --output-json / --model / --method / --budget / --extra options to a scorer CLI."""
    g = ap.add_argument_group("result record")
    g.add_argument("--output-json", default=None, help="write a result-JSON record here (an output; LLaVA's "
                   "--result-file is an input, the answer file)")
    g.add_argument("--model", default=None, help="model name stored in the record")
    g.add_argument("--method", default=None, help="token-reduction method ('none' = unpruned)")
    g.add_argument("--budget", type=int, default=None, help="visual-token budget (e.g. 576, 192, 128, 64)")
    g.add_argument("--extra", default=None, help="JSON object merged into the record (config, timings, ...)")


def finish_cli(args: argparse.Namespace, benchmark: str, metrics: dict[str, Any]) -> None:
    """Print metrics as JSON and, with --output-json, write the record."""
    print(json.dumps(metrics, indent=2, ensure_ascii=False))
    if getattr(args, "output_json", None):
        extra = json.loads(args.extra) if args.extra else {}
        for key in ("model", "method", "budget"):
            if getattr(args, key) is not None:
                extra[key] = getattr(args, key)
        write_result(args.output_json, benchmark, metrics, MAIN_METRIC.get(benchmark), extra)
        print(f"wrote {args.output_json}")


def main(argv: list[str] | None = None) -> None:
    """CLI: record server-scored metrics (e.g. VQAv2/VizWiz/MMBench-test from EvalAI) as a result JSON."""
    ap = argparse.ArgumentParser(description="Write a result record by hand (server-side scores).")
    ap.add_argument("--benchmark", required=True, choices=sorted(MAIN_METRIC))
    ap.add_argument("--metric", action="append", required=True, metavar="NAME=VALUE",
                    help="metric value, repeatable (the benchmark's main metric is required)")
    add_result_args(ap)
    args = ap.parse_args(argv)
    if not args.output_json:
        ap.error("--output-json is required")
    metrics = {}
    for item in args.metric:
        name, _, value = item.partition("=")
        metrics[name] = float(value)
    finish_cli(args, args.benchmark, metrics)


if __name__ == "__main__":
    main()
