"""LLaVA's TextVQA evaluator command line and printout; scoring is `llava.eval.scoring.textvqa` (answers
matched to annotations by image id + question recovered from the prompt).

    python -m llava.eval.eval_textvqa --annotation-file TextVQA_0.5.1_val.json --result-file answers.jsonl
`--result-file` is one answer file, `--result-dir` a folder of them (every *.jsonl); both are inputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llava.eval.scoring.common import read_json, read_jsonl
from llava.eval.scoring.textvqa import score_textvqa


def eval_single(annotation_file: str | Path, result_file: str | Path) -> dict:
    """Print the experiment name, sample count and accuracy of one answer file; return the metrics."""
    print(Path(result_file).stem)
    metrics = score_textvqa(read_jsonl(result_file), read_json(annotation_file)["data"])
    print(f"Samples: {metrics['total']}\nAccuracy: {metrics['accuracy']:.2f}%\n")
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Score `--result-file` and / or every .jsonl of `--result-dir` against the annotation file."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotation-file", required=True, help="TextVQA_0.5.1_val.json")
    ap.add_argument("--result-file", default=None, help="an answer JSONL to score")
    ap.add_argument("--result-dir", default=None, help="a folder whose *.jsonl answer files are scored")
    args = ap.parse_args(argv)
    try:
        if args.result_file:
            eval_single(args.annotation_file, args.result_file)
        for path in sorted(Path(args.result_dir).iterdir()) if args.result_dir else []:
            if path.suffix == ".jsonl":
                eval_single(args.annotation_file, path)
            else:
                print(f"Skipping {path.name}")
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
