"""Concatenate chunk answer files `{CHUNKS}_{k}.jsonl` in k order into `merge.jsonl`, checked against the
question file: a question with no answer, or with more answers than it has lines, is an error naming its id.

Usage: python -m llava.eval.merge_chunks --chunk-dir DIR --num-chunks K --question-file Q [--output OUT]
       [--format loader|science|mmbench|video] [--limit N]
       (format guessed from the extension: .jsonl / .json / .tsv; `video`: Video-LLaVA's chunks `{K}_{k}.json`
       checked against the first N (default 1,000, 0 = all) question_ids of a test_q.json)
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
from llava.eval.video_judge import DEFAULT_LIMIT, video_question_ids

CHUNK_SUFFIX = {"video": ".json"}  # llava.eval.model_video_qa writes Video-LLaVA's names; the others .jsonl


def _ids(counter: Counter, limit: int = 10) -> str:
    ids = sorted(counter)
    return ", ".join(ids[:limit]) + (f" ... ({len(ids)} in all)" if len(ids) > limit else "")


def chunk_files(chunk_dir: str | Path, num_chunks: int, kind: str | None = None) -> list[Path]:
    """The chunk answer files `{num_chunks}_{k}` of a format, in k order."""
    suffix = CHUNK_SUFFIX.get(kind, ".jsonl")
    return [Path(chunk_dir) / f"{num_chunks}_{k}{suffix}" for k in range(num_chunks)]


def expected_ids(question_file: str | Path, kind: str | None, limit: int) -> Counter:
    """How many answers each question_id must have (`limit` applies to the video format only)."""
    if kind == "video":
        return Counter(str(i) for i in video_question_ids(question_file, limit))
    return Counter(str(item.question_id) for item in read_questions(kind or guess_kind(question_file), question_file))


def merge_chunks(chunk_dir: str | Path, num_chunks: int, question_file: str | Path, output: str | Path | None = None,
                 kind: str | None = None, limit: int = DEFAULT_LIMIT) -> Path:
    """Write the merged answer file (and its merged run sidecar); return its path."""
    chunk_dir = Path(chunk_dir)
    output = Path(output) if output else chunk_dir / "merge.jsonl"
    files = chunk_files(chunk_dir, num_chunks, kind)
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise EvalInputError(f"chunk answer file(s) missing: {', '.join(absent)}; rerun the generation for those "
                             "chunks (it resumes)")
    answers = [row for f in files for row in read_answer_lines(f)]
    expected = expected_ids(question_file, kind, limit)
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
        raise EvalInputError(f"merging {chunk_dir}/{num_chunks}_*{files[0].suffix} against {question_file}: "
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
    ap.add_argument("--format", default=None, choices=("loader", "science", "mmbench", "video"))
    ap.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                    help="video: the first N samples of test_q.json were answered (0 = all)")
    args = ap.parse_args(argv)
    chunks = {f"chunk {k}": f for k, f in enumerate(chunk_files(args.chunk_dir, args.num_chunks, args.format))}
    clash = overwritten_input({"--output": args.output}, {"--question-file": args.question_file, **chunks})
    if clash:
        print(f"error: {clash}", file=sys.stderr)
        return 2
    try:
        merge_chunks(args.chunk_dir, args.num_chunks, args.question_file, args.output, args.format, args.limit)
    except (EvalInputError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
