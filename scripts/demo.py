"""PIPELINE DEMO on a tiny random model — not a result.

Runs the GQA and POPE evaluation path end to end (question files -> answers -> scores -> result JSONs -> table)
on the bundled tiny random LLaVA-1.5-shaped checkpoint, unpruned and with VisionDrop at 64 tokens, using real
GQA / POPE questions (a few lines shipped in tests/data/gqa_pope, or --eval-data: a folder laid out like LLaVA's
playground/data/eval) and generated stand-in images. The numbers only show that the pipeline works.
Usage: python scripts/demo.py [--out DIR] [--eval-data DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llava.eval import model_vqa_loader  # noqa: E402
from llava.eval.record import build_extra  # noqa: E402
from llava.eval.scoring import gqa as gqa_scorer  # noqa: E402
from llava.eval.scoring import pope as pope_scorer  # noqa: E402
from llava.eval.scoring.results import load_results  # noqa: E402
from llava.model.tiny import tiny_llava_path  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from make_table import build_table  # noqa: E402

BANNER = "PIPELINE DEMO on a tiny random model — not a result"
MARKER = ".visiondrop-demo"  # marks a folder the demo made; only its data/ and results/ are ever removed
CONFIGS = ("configs/none/llava15.yaml", "configs/visiondrop/llava15_64.yaml")


def stand_in_image(name: str, path: Path) -> None:
    """A deterministic picture of coloured rectangles, seeded by the file name."""
    from PIL import Image, ImageDraw

    rng = random.Random(name)
    image = Image.new("RGB", (320, 240), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randrange(280), rng.randrange(200)
        draw.rectangle((x, y, x + rng.randrange(20, 120), y + rng.randrange(20, 90)),
                       fill=tuple(rng.randrange(256) for _ in range(3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """JSON lines, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def take(path: Path, n: int, per_category: bool = False) -> list[dict]:
    """The first n rows of a JSONL file (spread over categories when per_category)."""
    rows, counts = [], {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            cat = row.get("category") if per_category else None
            if counts.get(cat, 0) < (max(1, n // 3) if per_category else n):
                counts[cat] = counts.get(cat, 0) + 1
                rows.append(row)
            if len(rows) >= n:
                break
    return rows


def build_data(data: Path, source: Path, n: int) -> str:
    """Question files, stand-in images and label files for GQA and POPE; return where the questions came from."""
    gqa_file, pope_file = source / "gqa/llava_gqa_testdev_balanced.jsonl", source / "pope/llava_pope_test.jsonl"
    for needed in (gqa_file, pope_file, source / "pope/coco"):
        if not needed.exists():
            raise SystemExit(f"error: --eval-data {source} has no {needed.relative_to(source)}; give a folder laid out "
                             "like LLaVA's playground/data/eval (default: tests/data/gqa_pope)")
    gqa, pope = take(gqa_file, n), take(pope_file, n, per_category=True)
    shutil.copytree(source / "pope/coco", data / "pope/coco")
    write_jsonl(data / "gqa/llava_gqa_testdev_balanced.jsonl", gqa)
    write_jsonl(data / "pope/llava_pope_test.jsonl", pope)
    # GQA ground truth is not redistributable here: every question gets the stand-in answer "yes".
    truth = {r["question_id"]: {"answer": "yes", "isBalanced": True} for r in gqa}
    (data / "gqa/data").mkdir(parents=True, exist_ok=True)
    (data / "gqa/data/testdev_balanced_questions.json").write_text(json.dumps(truth))
    for row in gqa:
        stand_in_image(row["image"], data / "gqa/data/images" / row["image"])
    for row in pope:
        stand_in_image(row["image"], data / "pope/val2014" / row["image"])
    return f"{len(gqa)} GQA + {len(pope)} POPE questions from {source}"


def run_config(config: str, model: Path, data: Path, results: Path, gen_args: list[str]) -> None:
    """The gqa.sh and pope.sh Python path for one config: answers, conversion, score, result JSON."""
    cfg = REPO / config
    run = f"{cfg.parent.name}_{cfg.stem}"
    common = ["--model-path", str(model), "--config", str(cfg), "--device", "cpu", "--temperature", "0",
              "--conv-mode", "vicuna_v1", *gen_args]
    gqa_answers = data / f"gqa/answers/llava_gqa_testdev_balanced/{run}/merge.jsonl"
    pope_answers = data / f"pope/answers/{run}.jsonl"
    jobs = [
        (gqa_answers, ["--question-file", str(data / "gqa/llava_gqa_testdev_balanced.jsonl"),
                       "--image-folder", str(data / "gqa/data/images")],
         gqa_scorer, ["--predictions-out", str(data / "gqa/data/testdev_balanced_predictions.json"),
                      "--questions", str(data / "gqa/data/testdev_balanced_questions.json")], "gqa"),
        (pope_answers, ["--question-file", str(data / "pope/llava_pope_test.jsonl"),
                        "--image-folder", str(data / "pope/val2014")],
         pope_scorer, ["--question-file", str(data / "pope/llava_pope_test.jsonl"),
                       "--annotation-dir", str(data / "pope/coco")], "pope"),
    ]
    for answers, driver_args, scorer, score_args, bench in jobs:
        start = time.perf_counter()
        if model_vqa_loader.main([*driver_args, *common, "--answers-file", str(answers)]) != 0:
            raise SystemExit(f"demo: answer generation failed for {bench} ({config})")
        extra = build_extra(answers, run, round(time.perf_counter() - start, 3))
        with contextlib.redirect_stdout(io.StringIO()):
            scorer.main(["--answers", str(answers), *score_args, "--extra", json.dumps(extra),
                         "--output-json", str(results / run / f"{bench}.json")])
        print(f"  {run}/{bench}: {extra['answers']} answers, measured visual tokens per layer "
              f"{extra['visual_tokens_mean']:.1f} (avg over layers)")


def prepare_out(out: Path) -> None:
    """Make the work folder; a folder of an earlier demo run loses only its data/ and results/, any other
    non-empty folder is refused (the demo never deletes what it did not create)."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out} is a file; give a folder for the demo")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise SystemExit(f"error: --out {out} exists, is not empty and was not made by the demo; give a new or "
                             "empty folder (nothing was changed)")
        for part in ("data", "results"):
            shutil.rmtree(out / part, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by scripts/demo.py; it removes data/ and results/ here when it runs again\n")


def main(argv: list[str] | None = None) -> int:
    """Build data, run both configs, print the table."""
    ap = argparse.ArgumentParser(description=BANNER)
    ap.add_argument("--out", default=str(REPO / "playground" / "demo"),
                    help="work folder: new, empty, or one of an earlier demo run (its data/ and results/ are redone)")
    ap.add_argument("--eval-data", default=str(REPO / "tests" / "data" / "gqa_pope"),
                    help="folder with LLaVA's GQA and POPE question files and POPE labels, in its playground layout")
    ap.add_argument("--questions", type=int, default=6, help="questions per benchmark")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="random weights never stop early: keep it small")
    ap.add_argument("--batch-size", type=int, default=6)
    args = ap.parse_args(argv)
    out = Path(args.out)
    prepare_out(out)
    import torch

    torch.set_num_threads(1)  # the tiny model gains nothing from threads; spinning threads slow busy machines
    start = time.perf_counter()
    data, results = out / "data" / "eval", out / "results"
    print(f"== {BANNER} ==")
    model = tiny_llava_path()
    print(f"model: {model} (random weights; answers are gibberish)")
    print("data: " + build_data(data, Path(args.eval_data), args.questions) + f"; stand-in images; folder {out}")
    gen_args = ["--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size)]
    for config in CONFIGS:
        print(f"config {config}:")
        run_config(config, model, data, results, gen_args)
    print(f"\n== {BANNER} (GQA ground truth is a stand-in) ==\n")
    print(build_table(load_results(results)), end="")
    print(f"\n{BANNER}. Finished in {time.perf_counter() - start:.0f} s; result JSONs in {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
