"""Run records: the `<answers>.run.json` sidecar and the extra fields every result JSON carries.

Usage: python -m llava.eval.record extra --answers A.jsonl [--run NAME] [--wall-time S]   (prints JSON)
       python -m llava.eval.record pending --answers A.jsonl --benchmark vqav2 --output-json R.json
           [--upload-file U] [--run NAME] [--wall-time S]   (server-scored benchmarks: answers, no score yet)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from llava.eval.scoring.common import refuse_overwrite
from llava.eval.scoring.results import write_result

# Settings that change the answers: an answer file may only be resumed / merged when they agree.
COMPARED_SETTINGS = ("model_id", "pruning", "conv_mode", "min_pixels", "max_pixels", "max_new_tokens", "temperature",
                     "top_p", "dtype", "code_version")


def run_file_for(answers_file: str | Path) -> Path:
    """The sidecar path of an answer file."""
    path = Path(answers_file)
    return path.with_name(path.name + ".run.json")


def load_run_info(answers_file: str | Path) -> dict[str, Any]:
    """The sidecar of an answer file ({} when absent)."""
    path = run_file_for(answers_file)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_answer_lines(path: str | Path) -> list[dict]:
    """Answer JSONL rows (blank lines skipped); a bad line is an error naming the file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"answer file {path} line {line_no}: not valid JSON ({err.msg})") from err
    return rows


def visual_token_summary(answers: list[dict]) -> dict[str, Any]:
    """Mean measured visual tokens per LLM layer over the samples that had an image, and their average."""
    layers = [a.get("metadata", {}).get("visual_tokens_per_layer") for a in answers]
    layers = [v for v in layers if v and any(v)]
    if not layers:
        return {"visual_tokens_per_layer": None, "visual_tokens_mean": None, "samples_with_image": 0}
    per_layer = [sum(col) / len(layers) for col in zip(*layers)]
    return {"visual_tokens_per_layer": [round(v, 4) for v in per_layer],
            "visual_tokens_mean": round(sum(per_layer) / len(per_layer), 4), "samples_with_image": len(layers)}


def build_extra(answers_file: str | Path, run: str | None = None, wall_time: float | None = None) -> dict:
    """Extra result-record fields: model, its family, method, budget, full config, the tower label where the model
    has one (Video-LLaVA), measured visual tokens, timings."""
    answers = read_answer_lines(answers_file)
    info = load_run_info(answers_file)
    settings = info.get("settings", {})
    pruning = settings.get("pruning", {})
    runs = info.get("runs", [])
    towers = list(dict.fromkeys(r["tower"] for r in runs if r.get("tower")))
    extra = {
        "run": run, "model": settings.get("model_id"), "model_path": settings.get("model_path"),
        "family": settings.get("family"),
        "method": pruning.get("method"), "budget": pruning.get("budget"), "config_file": settings.get("config_file"),
        "config": pruning, "config_hash": settings.get("config_hash"), "code_version": settings.get("code_version"),
        "answers_file": str(answers_file), "answers": len(answers),
        **visual_token_summary(answers),
        "generation": {k: settings.get(k) for k in ("conv_mode", "min_pixels", "max_pixels", "max_new_tokens",
                                                    "temperature", "top_p", "dtype")},
        "generation_seconds": round(sum(r.get("seconds", 0.0) for r in runs), 3), "generation_runs": runs,
        "wall_time_s": wall_time,
    }
    if towers:
        extra["tower"] = "; ".join(towers)
    return extra


def main(argv: list[str] | None = None) -> int:
    """CLI: print the extra fields, or write a 'pending' record for a server-scored benchmark."""
    ap = argparse.ArgumentParser(description="Result-record helpers for the evaluation scripts.")
    ap.add_argument("mode", choices=("extra", "pending"))
    ap.add_argument("--answers", required=True)
    ap.add_argument("--run", default=None)
    ap.add_argument("--wall-time", type=float, default=None)
    ap.add_argument("--benchmark", default=None)
    ap.add_argument("--output-json", default=None, help="the pending result record to write")
    ap.add_argument("--upload-file", default=None)
    args = ap.parse_args(argv)
    extra = build_extra(args.answers, args.run, args.wall_time)
    if args.mode == "extra":
        print(json.dumps(extra))
        return 0
    if not (args.benchmark and args.output_json):
        ap.error("pending needs --benchmark and --output-json")
    refuse_overwrite({"--output-json": args.output_json},
                     {"--answers": args.answers, "--upload-file": args.upload_file})
    metrics = {"answers": extra["answers"], "scored": False, "upload_file": args.upload_file}
    extra["note"] = "no local score: submit the upload file to the evaluation server, then record the score with " \
                    "python -m llava.eval.scoring.results --benchmark ... --metric NAME=VALUE --output-json ..."
    write_result(args.output_json, args.benchmark, metrics, "answers", extra)
    print(f"wrote {args.output_json} (answers only; score on the server)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
