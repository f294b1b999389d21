"""Concatenate chunk answer files `{CHUNKS}_{k}.jsonl` in k order into `merge.jsonl`, checked against the
question file: a question with no answer, or with more answers than it has lines, is an error naming its id.

Usage: python -m llava.eval.merge_chunks --chunk-dir DIR --num-chunks K --question-file Q [--output OUT]
       [--format loader|science|mmbench]   (format guessed from the extension: .jsonl / .json / .tsv)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from llava.eval.questions import EvalInputError, guess_kind, read_questions
from llava.eval.record import COMPARED_SETTINGS, load_run_info, read_answer_lines, run_file_for
from llava.eval.scoring.common import overwritten_input


def _ids(counter: Counter, limit: int = 10) -> str:
    ids = sorted(counter)
    return ", ".join(ids[:limit]) + (f" ... ({len(ids)} in all)" if len(ids) > limit else "")


def merge_chunks(chunk_dir: str | Path, num_chunks: int, question_file: str | Path, output: str | Path | None = None,
                 kind: str | None = None) -> Path:
    """Write the merged answer file (and its merged run sidecar); return its path."""
    chunk_dir = Path(chunk_dir)
    output = Path(output) if output else chunk_dir / "merge.jsonl"
    files = [chunk_dir / f"{num_chunks}_{k}.jsonl" for k in range(num_chunks)]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise EvalInputError(f"chunk answer file(s) missing: {', '.join(absent)}; rerun the generation for those "
                             "chunks (it resumes)")
    answers = [row for f in files for row in read_answer_lines(f)]
    expected = Counter(str(item.question_id)
                       for item in read_questions(kind or guess_kind(question_file), question_file))
    got = Counter(str(a.get("question_id")) for a in answers)
    missing, extra = expected - got, got - expected
    duplicated = Counter({k: v for k, v in extra.items() if k in expected})
    unknown = Counter({k: v for k, v in extra.items() if k not in expected})
    problems = []
    if missing:
        problems.append(f"{sum(missing.values())} question(s) without an answer: question_id {_ids(missing)}")
    if duplicated:
        problems.append(f"duplicated answers for question_id {_ids(duplicated)}")
    if unknown:
        problems.append(f"answers for question_id(s) not in the question file: {_ids(unknown)}")
    if problems:
        raise EvalInputError(f"merging {chunk_dir}/{num_chunks}_*.jsonl against {question_file}: "
                             + "; ".join(problems))
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as f:
        f.write("".join(json.dumps(a) + "\n" for a in answers))
    infos = [load_run_info(f) for f in files]
    settings = [i["settings"] for i in infos if i.get("settings")]
    for other in settings[1:]:
        diff = [k for k in COMPARED_SETTINGS if other.get(k) != settings[0].get(k)]
        if diff:
            raise EvalInputError(f"chunks of {chunk_dir} were generated with different {', '.join(diff)}")
    merged = {"settings": settings[0] if settings else {}, "runs": [r for i in infos for r in i.get("runs", [])]}
    run_file_for(output).write_text(json.dumps(merged, indent=2) + "\n")
    print(f"merged {len(answers)} answers from {num_chunks} chunk(s) into {output}")
    return output


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit status 2 with one clear line on a missing / duplicated answer."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunk-dir", required=True, help="folder with {CHUNKS}_{k}.jsonl")
    ap.add_argument("--num-chunks", type=int, required=True)
    ap.add_argument("--question-file", required=True)
    ap.add_argument("--output", default=None, help="default: CHUNK_DIR/merge.jsonl")
    ap.add_argument("--format", default=None, choices=("loader", "science", "mmbench"))
    args = ap.parse_args(argv)
    chunks = {f"chunk {k}": Path(args.chunk_dir) / f"{args.num_chunks}_{k}.jsonl" for k in range(args.num_chunks)}
    clash = overwritten_input({"--output": args.output}, {"--question-file": args.question_file, **chunks})
    if clash:
        print(f"error: {clash}", file=sys.stderr)
        return 2
    try:
        merge_chunks(args.chunk_dir, args.num_chunks, args.question_file, args.output, args.format)
    except (EvalInputError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
