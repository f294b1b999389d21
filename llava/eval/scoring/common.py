"""Small I/O helpers shared by the scorers."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def read_jsonl_tolerant(path: str | Path) -> tuple[list[dict], int]:
    """Read a JSON-lines file, skipping blank lines; return (rows, number of unparsable lines)."""
    rows, bad = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
    return rows, bad


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSON-lines file (blank lines skipped); raise on an unparsable line."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_json(path: str | Path) -> Any:
    """Load one JSON document."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write JSON (creating parent folders) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")
    return path


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Write rows as JSON lines (creating parent folders)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def pct(num: float, den: float) -> float:
    """Percentage num/den*100, 0.0 when den is 0."""
    return 100.0 * num / den if den else 0.0


def overwritten_input(outputs: Mapping[str, Any], inputs: Mapping[str, Any]) -> str | None:
    """The message for an output path that names one of the inputs (flag -> path; None = not given), else None."""
    for out_flag, out in outputs.items():
        for in_flag, inp in inputs.items():
            if out is not None and inp is not None and Path(out).resolve() == Path(inp).resolve():
                return (f"{out_flag} {out} is the file given to {in_flag}: refusing to write over an input; "
                        "choose another output path")
    return None


def refuse_overwrite(outputs: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
    """Stop a CLI with a one-line error when an output would write over one of its inputs."""
    message = overwritten_input(outputs, inputs)
    if message:
        raise SystemExit(f"error: {message}")
