"""Question-file readers for the three LLaVA drivers (loader JSONL, ScienceQA JSON, MMBench TSV) and chunking.

Readers never load images (no torch import here): an item carries its image path or base64 string and is
opened by the generation engine. Every error names the file and the line (or entry / row) and the fix.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llava.constants import DEFAULT_IMAGE_TOKEN

LETTER_SUFFIX = "Answer with the option's letter from the given choices directly."
LETTER_SUFFIX_CN = "请直接回答选项字母。"
MMBENCH_OPTIONS = ("A", "B", "C", "D")


class EvalInputError(ValueError):
    """Bad evaluation input (question file, image, answer file); the message names the file and line."""


@dataclass
class EvalItem:
    """One generation request: what the model sees, what the answer line records, and where it came from."""

    index: int
    question_id: Any
    prompt: str
    query: str
    where: str
    image_file: Path | None = None
    image_b64: str | None = None
    convert_rgb: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    entry: int | None = None  # question-file entry the item comes from (MMBench rounds share one); None: index

    @property
    def has_image(self) -> bool:
        """True when the item comes with an image (ScienceQA text-only problems do not)."""
        return self.image_file is not None or self.image_b64 is not None

    @property
    def source(self) -> int:
        """The question-file entry of the item (chunks split entries)."""
        return self.index if self.entry is None else self.entry

    @property
    def key(self) -> tuple[str, str]:
        """Resume key; see `answer_key`."""
        return answer_key(self.question_id, self.prompt)


def answer_key(question_id: Any, prompt: str) -> tuple[str, str]:
    """(question_id, prompt): MME and TextVQA ids repeat, so the id alone cannot identify an answer."""
    return str(question_id), prompt


def get_chunk(items: list, num_chunks: int, chunk_idx: int) -> list:
    """LLaVA's split: the chunk_idx-th contiguous slice of size ceil(N / num_chunks) (empty when past the end)."""
    if num_chunks < 1 or not 0 <= chunk_idx < num_chunks:
        raise EvalInputError(f"--chunk-idx {chunk_idx} / --num-chunks {num_chunks}: need 0 <= idx < chunks")
    size = math.ceil(len(items) / num_chunks) if items else 0
    return items[chunk_idx * size:(chunk_idx + 1) * size]


def chunk_items(items: list[EvalItem], num_chunks: int, chunk_idx: int) -> list[EvalItem]:
    """The items of the question-file entries in chunk chunk_idx (entries are split, as LLaVA splits rows)."""
    entries = list(dict.fromkeys(item.source for item in items))
    keep = set(get_chunk(entries, num_chunks, chunk_idx))
    return [item for item in items if item.source in keep]


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise EvalInputError(f"{what} {path} not found: check the path (see playground/data/README.md)")


def read_loader_questions(question_file: str | Path, image_folder: str | Path = ".") -> list[EvalItem]:
    """LLaVA question JSONL (`question_id`, `image`, `text`): GQA, VQAv2, TextVQA, POPE, MME, VizWiz."""
    path, folder = Path(question_file), Path(image_folder)
    _require_file(path, "question file")
    items = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"question file {path} line {line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                reason = err.msg.removesuffix(" at")  # "Unterminated string starting at" + " at column 5"
                raise EvalInputError(f"{where}: not valid JSON ({reason} at column {err.colno}); fix or "
                                     "remove the line, or re-download the question file") from err
            if not isinstance(row, dict):
                raise EvalInputError(f"{where}: expected a JSON object, got {type(row).__name__}")
            for name in ("question_id", "image", "text"):
                if name not in row:
                    raise EvalInputError(f"{where}: missing '{name}' (each line needs question_id, image, text)")
            text = str(row["text"])
            items.append(EvalItem(index=len(items), question_id=row["question_id"], prompt=text,
                                  query=f"{DEFAULT_IMAGE_TOKEN}\n{text}", where=where,
                                  image_file=folder / str(row["image"])))
    return items


def read_science_questions(question_file: str | Path, image_folder: str | Path = ".",
                           single_pred_prompt: bool = False) -> list[EvalItem]:
    """ScienceQA `llava_test_CQM-A.json` (a JSON array); text-only problems get no image
    (docs/pipeline.md, 'ScienceQA')."""
    path, folder = Path(question_file), Path(image_folder)
    _require_file(path, "question file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise EvalInputError(f"question file {path} line {err.lineno}: not valid JSON ({err.msg}); "
                             "re-download llava_test_CQM-A.json") from err
    if not isinstance(data, list):
        raise EvalInputError(f"question file {path}: expected a JSON array of problems")
    items = []
    for i, entry in enumerate(data):
        where = f"question file {path} entry {i}"
        try:
            pid, question = entry["id"], entry["conversations"][0]["value"]
        except (KeyError, IndexError, TypeError) as err:
            raise EvalInputError(f"{where}: missing {err} (needs 'id' and 'conversations'[0]['value'])") from err
        where += f" (id {pid})"
        qs = str(question).replace(DEFAULT_IMAGE_TOKEN, "").strip()
        prompt, query, image = qs, qs, None
        if "image" in entry:
            image = folder / str(entry["image"])
            query, prompt = f"{DEFAULT_IMAGE_TOKEN}\n{qs}", f"{DEFAULT_IMAGE_TOKEN}\n{qs}"
        if single_pred_prompt:
            query, prompt = f"{query}\n{LETTER_SUFFIX}", f"{prompt}\n{LETTER_SUFFIX}"
        items.append(EvalItem(index=i, question_id=pid, prompt=prompt, query=query, where=where,
                              image_file=image, convert_rgb=False))
    return items


def is_none(value: Any) -> bool:
    """Reference `is_none`: missing, empty, or the strings 'nan' / 'none' (pandas NaN cells)."""
    return value is None or str(value).strip().lower() in ("", "nan", "none")


def read_mmbench_questions(question_file: str | Path, lang: str = "en", single_pred_prompt: bool = False,
                           all_rounds: bool = False) -> list[EvalItem]:
    """MMBench TSV rows (base64 images, options A..D, optional hint): one item per row, or with `all_rounds`
    one per option, the options rotated by one each round (LLaVA's `--all-rounds`)."""
    path = Path(question_file)
    _require_file(path, "question file")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    items: list[EvalItem] = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = [c for c in ("index", "question", "image", "A", "B") if c not in (reader.fieldnames or [])]
        if missing:
            raise EvalInputError(f"question file {path}: missing column(s) {missing} (an MMBench TSV has "
                                 "index, question, hint, A-D, answer, category, image, ...)")
        rows = [(reader.line_num, row) for row in reader]
    images = {row["index"]: row["image"] for _, row in rows}
    for entry, (line_no, row) in enumerate(rows):
        where = f"question file {path} line {line_no} (index {row.get('index')})"
        try:
            qid = int(row["index"])
        except (TypeError, ValueError) as err:
            raise EvalInputError(f"{where}: 'index' is not an integer") from err
        options = []
        for letter in MMBENCH_OPTIONS:
            if is_none(row.get(letter)):
                break
            options.append(str(row[letter]))
        image = row.get("image") or ""
        if len(image) < 64 and image in images:  # some TSVs point duplicate images at another row's index
            image = images[image]
        if not image:
            raise EvalInputError(f"{where}: empty 'image' (expected a base64-encoded image)")
        chars = list(MMBENCH_OPTIONS[:len(options)])
        for round_id in range(len(options) if all_rounds else 1):
            question = str(row["question"])
            if not is_none(row.get("hint")):
                question = f"{row['hint']}\n{question}"
            for letter, option in zip(MMBENCH_OPTIONS, options):
                question += f"\n{letter}. {option}"
            query = f"{DEFAULT_IMAGE_TOKEN}\n{question}"
            if single_pred_prompt:
                query += "\n" + (LETTER_SUFFIX_CN if lang == "cn" else LETTER_SUFFIX)
            extra = {"round_id": round_id, "options": options, "option_char": chars}
            items.append(EvalItem(index=len(items), question_id=qid, prompt=question, query=query, where=where,
                                  image_b64=image, convert_rgb=False, extra=extra, entry=entry))
            options, chars = options[1:] + options[:1], chars[1:] + chars[:1]
    return items


READERS = {"loader": read_loader_questions, "science": read_science_questions, "mmbench": read_mmbench_questions}


def read_questions(kind: str, question_file: str | Path) -> list[EvalItem]:
    """Read a question file of a driver kind ('loader', 'science', 'mmbench') with default options."""
    if kind not in READERS:
        raise EvalInputError(f"unknown question format {kind!r}; choose one of {sorted(READERS)}")
    return READERS[kind](question_file)


def guess_kind(question_file: str | Path) -> str:
    """Driver kind from the file extension: .jsonl -> loader, .json -> science, .tsv -> mmbench."""
    suffix = Path(question_file).suffix.lower()
    kinds = {".jsonl": "loader", ".json": "science", ".tsv": "mmbench"}
    if suffix not in kinds:
        raise EvalInputError(f"cannot tell the format of {question_file}: pass --format loader|science|mmbench")
    return kinds[suffix]
