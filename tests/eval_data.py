"""Builds a tiny DATA_ROOT laid out like playground/data/eval: a few real LLaVA questions per benchmark (shipped
in tests/data/llava_eval), stand-in images and hand-made minimal ground-truth files (used by
tests/test_eval_pipeline.py)."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import zlib
from pathlib import Path

from PIL import Image

LLAVA_EVAL = Path(__file__).resolve().parent / "data" / "llava_eval"


def stand_in_image(name: str, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A deterministic two-colour RGB image derived from a name."""
    seed = zlib.crc32(name.encode())
    image = Image.new("RGB", size, (seed % 256, (seed >> 8) % 256, (seed >> 16) % 256))
    image.paste((255 - seed % 256, 90, 160), (0, 0, size[0] // 2, size[1] // 2))
    return image


def save_image(path: Path, name: str) -> None:
    """Write a stand-in image at path (creating folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stand_in_image(name).save(path)


def first_lines(rel: str, n: int) -> list[dict]:
    """The first n rows of a shipped question file."""
    lines = (LLAVA_EVAL / rel).read_text(encoding="utf-8").splitlines()
    assert len(lines) >= n, f"{LLAVA_EVAL / rel} holds {len(lines)} lines, {n} wanted"
    return [json.loads(line) for line in lines[:n]]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """JSON lines, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def with_images(rows: list[dict], folder: Path) -> list[dict]:
    """Write one stand-in image per distinct 'image' of rows into folder; return rows."""
    for row in rows:
        save_image(folder / row["image"], row["image"])
    return rows


def build_gqa(root: Path, n: int = 2) -> list[dict]:
    rows = with_images(first_lines("gqa/llava_gqa_testdev_balanced.jsonl", n), root / "gqa/data/images")
    write_jsonl(root / "gqa/llava_gqa_testdev_balanced.jsonl", rows)
    gt = {r["question_id"]: {"answer": "yes", "isBalanced": True} for r in rows}
    (root / "gqa/data/testdev_balanced_questions.json").write_text(json.dumps(gt))
    return rows


def build_pope(root: Path, n: int = 2) -> list[dict]:
    rows = with_images(first_lines("pope/llava_pope_test.jsonl", n), root / "pope/val2014")
    write_jsonl(root / "pope/llava_pope_test.jsonl", rows)
    shutil.copytree(LLAVA_EVAL / "pope/coco", root / "pope/coco")
    return rows


def build_mme(root: Path) -> list[dict]:
    rows = first_lines("MME/llava_mme.jsonl", 2)  # two questions on one artwork image
    release = root / "MME/MME_Benchmark_release_version"
    with_images(rows, release)
    stem = Path(rows[0]["image"]).stem
    suffix = "\nAnswer the question using a single word or phrase."
    qa = [r["text"].replace(suffix, "") + " Please answer yes or no.\t" + a for r, a in zip(rows, ("Yes", "No"))]
    txt = release / "artwork/questions_answers_YN" / f"{stem}.txt"
    txt.parent.mkdir(parents=True, exist_ok=True)
    txt.write_text("\n".join(qa) + "\n")
    write_jsonl(root / "MME/llava_mme.jsonl", rows)
    return rows


def build_textvqa(root: Path, n: int = 2) -> list[dict]:
    rows = with_images(first_lines("textvqa/llava_textvqa_val_v051_ocr.jsonl", n), root / "textvqa/train_images")
    write_jsonl(root / "textvqa/llava_textvqa_val_v051_ocr.jsonl", rows)
    data = [{"image_id": r["question_id"], "question": r["text"].split("\n")[0], "answers": ["yes"] * 10}
            for r in rows]
    (root / "textvqa/TextVQA_0.5.1_val.json").write_text(json.dumps({"data": data}))
    return rows


def build_vizwiz(root: Path, n: int = 2) -> list[dict]:
    rows = with_images(first_lines("vizwiz/llava_test.jsonl", n), root / "vizwiz/test")
    write_jsonl(root / "vizwiz/llava_test.jsonl", rows)
    return rows


def build_vqav2(root: Path) -> list[dict]:
    suffix = "\nAnswer the question using a single word or phrase."
    rows = [{"question_id": qid, "image": f"COCO_test2015_{qid // 1000:012d}.jpg", "text": text + suffix,
             "category": "default"} for qid, text in ((1000, "What color is the bus?"), (2001, "How many dogs?"))]
    with_images(rows, root / "vqav2/test2015")
    write_jsonl(root / "vqav2/llava_vqav2_mscoco_test-dev2015.jsonl", rows)
    extra = {"question_id": 3002, "image": "COCO_test2015_000000000003.jpg", "text": "Is it sunny?" + suffix,
             "category": "default"}
    write_jsonl(root / "vqav2/llava_vqav2_mscoco_test2015.jsonl", rows + [extra])
    return rows


def build_sqa(root: Path) -> list[dict]:
    picked = json.loads((LLAVA_EVAL / "scienceqa/llava_test_CQM-A.json").read_text())  # text only, then with image
    for d in picked:
        if "image" in d:
            save_image(root / "scienceqa/images/test" / d["image"], d["image"])
    (root / "scienceqa").mkdir(parents=True, exist_ok=True)
    (root / "scienceqa/llava_test_CQM-A.json").write_text(json.dumps(picked))
    return picked


def png_b64(name: str) -> str:
    """Base64 of a stand-in PNG."""
    buf = io.BytesIO()
    stand_in_image(name).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def build_mmbench(root: Path, folder: str = "mmbench", split: str = "mmbench_dev_20230712") -> list[dict]:
    cols = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
            "l2-category", "comment", "split"]
    rows = [
        {"index": 0, "question": "What is shown?", "hint": "A photo.", "A": "a cat", "B": "a dog", "C": "a car",
         "D": "", "answer": "A", "category": "object", "image": png_b64("mmb0")},
        {"index": 1000000, "question": "What is shown?", "hint": "nan", "A": "a dog", "B": "a car", "C": "a cat",
         "D": "", "answer": "C", "category": "object", "image": png_b64("mmb0")},
    ]
    path = root / folder / f"{split}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, cols, delimiter="\t", restval="")
        writer.writeheader()
        writer.writerows(rows)
    return rows


BUILDERS = {"gqa": build_gqa, "pope": build_pope, "mme": build_mme, "textvqa": build_textvqa,
            "vizwiz": build_vizwiz, "vqav2": build_vqav2, "sqa": build_sqa, "mmbench": build_mmbench}
