"""MME (docs/pipeline.md, 'MME'): answers → per-category txt files and the official acc / acc+ / score calculation."""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llava.eval.scoring.common import read_jsonl, refuse_overwrite
from llava.eval.scoring.results import add_result_args, finish_cli

BENCHMARK = "mme"
PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
              "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
SUFFIX = "Answer the question using a single word or phrase."
YN = " Please answer yes or no."

GroundTruth = Mapping[tuple[str, str, str], str]  # (category, txt file name, question) -> yes/no


def load_ground_truth(release_dir: str | Path) -> dict[tuple[str, str, str], str]:
    """Read `MME_Benchmark_release_version/` txt files (2 lines `question\\tanswer`) into a GT mapping."""
    gt = {}
    for cat_dir in sorted(p for p in Path(release_dir).iterdir() if p.is_dir()):
        qa_dir = cat_dir / "questions_answers_YN" if (cat_dir / "images").is_dir() else cat_dir
        for txt in sorted(qa_dir.glob("*.txt")):
            for line in txt.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    question, answer = line.strip().split("\t")
                    gt[(cat_dir.name, txt.name, question)] = answer
    return gt


def convert_answers(answers: Iterable[Mapping[str, Any]],
                    gt: GroundTruth) -> dict[str, list[tuple[str, ...]]]:
    """Answers → {category: [(image, question, gt, prediction)]} in answer order (reference converter)."""
    out: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for ans in answers:
        qid = str(ans["question_id"])
        category, image = qid.split("/")[0], qid.split("/")[-1]
        txt = image.rsplit(".", 1)[0] + ".txt"
        question = ans["prompt"]
        if SUFFIX in question:
            question = question.replace(SUFFIX, "").strip()
        if "Please answer yes or no." not in question:
            question = question + YN
            if (category, txt, question) not in gt:
                question = question.replace(YN, " " + YN)
        key = (category, txt, question)
        if key not in gt:
            raise KeyError(f"MME ground truth has no entry for {key}")
        out[category].append((image, question, gt[key], ans["text"]))
    return dict(out)


def write_txt_files(converted: Mapping[str, list[tuple[str, ...]]], out_dir: str | Path) -> list[Path]:
    """Write `eval_tool/answers/{exp}/{category}.txt` files (tabs/newlines in predictions become spaces)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for category, rows in converted.items():
        path = out_dir / f"{category}.txt"
        with open(path, "w", encoding="utf-8") as f:
            for image, question, gt, pred in rows:
                f.write("\t".join((image, question, gt, " ".join(pred.split()))) + "\n")
        paths.append(path)
    return paths


def parse_pred(pred: str) -> str:
    """Official rule: lowercase; exactly yes/no, else 'yes' in first 4 chars → yes, 'no' → no, else other."""
    pred = pred.lower()
    if pred in ("yes", "no"):
        return pred
    head = pred[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def score_category(rows: list[tuple[str, ...]]) -> dict[str, float]:
    """acc, acc+ (both %), score = acc + acc+ for one subtask; questions grouped in pairs by image."""
    by_image: dict[str, list[bool]] = defaultdict(list)
    other = 0
    for image, _question, gt, pred in rows:
        label = parse_pred(pred)
        other += label == "other"
        by_image[image].append(label == gt.lower())
    bad = {img: len(v) for img, v in by_image.items() if len(v) != 2}
    if bad:
        raise ValueError(f"MME expects exactly 2 questions per image; got {dict(list(bad.items())[:5])}")
    n_q = sum(len(v) for v in by_image.values())
    acc = 100.0 * sum(sum(v) for v in by_image.values()) / n_q
    acc_plus = 100.0 * sum(all(v) for v in by_image.values()) / len(by_image)
    return {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus, "questions": n_q,
            "images": len(by_image), "other_answers": other}


def score_mme(converted: Mapping[str, list[tuple[str, ...]]]) -> dict:
    """Per-subtask scores plus Perception, Cognition and their sum (`perception_cognition`)."""
    subtasks = {cat: score_category(rows) for cat, rows in converted.items()}
    perception = sum(subtasks[c]["score"] for c in PERCEPTION if c in subtasks)
    cognition = sum(subtasks[c]["score"] for c in COGNITION if c in subtasks)
    unknown = sorted(set(subtasks) - set(PERCEPTION) - set(COGNITION))
    return {
        "perception": perception, "cognition": cognition, "perception_cognition": perception + cognition,
        "subtasks": subtasks,
        "missing_subtasks": [c for c in PERCEPTION + COGNITION if c not in subtasks],
        "unknown_subtasks": unknown,
    }


def main(argv: list[str] | None = None) -> None:
    """CLI: convert MME answers to txt files and score them."""
    ap = argparse.ArgumentParser(description="MME converter + official calculation (P, C, P+C).")
    ap.add_argument("--answers", required=True, help="answer JSONL in question-file order")
    ap.add_argument("--release-dir", required=True, help="MME_Benchmark_release_version/")
    ap.add_argument("--txt-dir", default=None, help="write eval_tool/answers/{exp}/{category}.txt here")
    add_result_args(ap)
    args = ap.parse_args(argv)
    refuse_overwrite({"--output-json": args.output_json}, {"--answers": args.answers})
    converted = convert_answers(read_jsonl(args.answers), load_ground_truth(args.release_dir))
    if args.txt_dir:
        write_txt_files(converted, args.txt_dir)
    finish_cli(args, BENCHMARK, score_mme(converted))


if __name__ == "__main__":
    main()
