"""The plugin's sidecar JSON: the method, its full config and the measured visual tokens per layer of every
lmms-eval task a process ran, rewritten after each batch of requests so an interrupted run keeps what it did."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def record_path(template: str, model_id: str, config_label: str, rank: int) -> Path:
    """The sidecar path of one process: `template` with {model}, {config} and {rank} filled in."""
    try:
        return Path(template.format(model=model_id, config=config_label, rank=rank))
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"record={template!r}: only the fields {{model}}, {{config}} and {{rank}} may be used "
                         f"({err})") from None


class VisualTokenRecord:
    """Accumulates per-task visual-token counts and writes them, with the run's settings, to one JSON file."""

    def __init__(self, path: Path, header: dict[str, Any]):
        self.path, self.header = path, header
        self.tasks: dict[str, dict[str, Any]] = {}

    def add(self, task: str, request_type: str, per_layer: list[int]) -> None:
        """Count one request's per-layer visual tokens (zeros for a text-only request)."""
        entry = self.tasks.setdefault(task, {"requests": 0, "request_types": {}, "sum_per_layer": None})
        entry["requests"] += 1
        entry["request_types"][request_type] = entry["request_types"].get(request_type, 0) + 1
        sums = entry["sum_per_layer"]
        entry["sum_per_layer"] = list(per_layer) if sums is None else [a + b for a, b in zip(sums, per_layer)]

    def summary(self) -> dict[str, Any]:
        """The sidecar's content: header + per task the request count and mean visual tokens per layer."""
        tasks = {}
        for name, entry in self.tasks.items():
            per_layer = [round(s / entry["requests"], 4) for s in entry["sum_per_layer"] or []]
            tasks[name] = {"requests": entry["requests"], "request_types": dict(entry["request_types"]),
                           "visual_tokens_per_layer": per_layer,
                           "visual_tokens_mean": round(sum(per_layer) / len(per_layer), 4) if per_layer else 0.0}
        return {**self.header, "tasks": tasks}

    def write(self) -> None:
        """Atomically (re)write the sidecar."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.summary(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)
