"""ScienceQA letter parsing, choice counting, Accuracy vs IMG-Accuracy."""

import json
from pathlib import Path

import pytest

from llava.eval.scoring.scienceqa import count_choices, main, parse_letter, problems_from_cqm, score_scienceqa


def test_parse_letter() -> None:
    assert parse_letter("B") == "B"
    assert parse_letter("B. dog") == "B"
    assert parse_letter("The answer is C.") == "C"
    assert parse_letter("I think so") == "FAILED"
    assert parse_letter("The answer is A. The answer is B.") == "FAILED"  # two matches
    assert parse_letter("B.") == "FAILED"  # too short for rule (b), no sentence
    assert parse_letter("The answer is F.") == "F"  # parsed, but out of range later


def test_count_choices() -> None:
    assert count_choices("<image>\nContext: x\nQ?\nA. cat\nB. dog\nC. cow") == 3
    assert count_choices("Which closing?\nA. Love,\nZoe\nB. love,\nZoe") == 2  # multi-line options
    assert count_choices("no options here") == 0


def _cqm(pid: str, human: str, gold: str, image: bool) -> dict:
    item = {"id": pid, "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gold}]}
    if image:
        item["image"] = f"{pid}/image.png"
    return item


CQM = [
    _cqm("1", "<image>\nContext: x\nQ1?\nA. cat\nB. dog\nC. cow", "B", True),
    _cqm("2", "Q2?\nA. yes\nB. no", "A", False),
    _cqm("3", "<image>\nQ3?\nA. one\nB. two", "B", True),
    _cqm("4", "<image>\nQ4?\nA. red\nB. blue\nC. green\nD. pink", "D", True),
    _cqm("5", "Q5?\nA. Love,\nZoe\nB. love,\nZoe", "A", False),
    _cqm("6", "Q6?\nA. x\nB. y", "A", False),
]


def _ans(pid: str, img: bool, text: str) -> dict:
    prompt = ("<image>\n" if img else "") + f"Q{pid}?"
    return {"question_id": pid, "prompt": prompt, "text": text, "answer_id": "x", "model_id": "m",
            "metadata": {}}


ANSWERS = [
    _ans("1", True, "B"),  # right (img)
    _ans("2", False, "A. yes"),  # right
    _ans("3", True, "The answer is B."),  # right (img)
    _ans("4", True, "I don't know"),  # FAILED (img)
    _ans("5", False, "C"),  # letter beyond the 2 choices -> wrong
]  # problem 6 has no answer -> FAILED


def test_scienceqa_accuracy_and_img_accuracy(tmp_path: Path) -> None:
    problems = problems_from_cqm(CQM)
    assert problems["5"] == {"answer": "A", "n_choices": 2, "has_image": False}
    m = score_scienceqa(ANSWERS, problems)
    assert m["accuracy"] == pytest.approx(100 * 3 / 6)
    assert m["img_accuracy"] == pytest.approx(100 * 2 / 3)
    assert (m["img_total"], m["failed_parses"], m["out_of_range"], m["missing_answers"]) == (3, 2, 1, 1)

    ans_file, q_file, res = tmp_path / "a.jsonl", tmp_path / "llava_test_CQM-A.json", tmp_path / "r.json"
    ans_file.write_text("".join(json.dumps(a) + "\n" for a in ANSWERS))
    q_file.write_text(json.dumps(CQM))
    main(["--answers", str(ans_file), "--question-file", str(q_file), "--output-json", str(res),
          "--output-file", str(tmp_path / "out.jsonl")])
    record = json.loads(res.read_text())
    assert record["main_metric"] == "img_accuracy" and record["metrics"]["accuracy"] == pytest.approx(50.0)
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 6
