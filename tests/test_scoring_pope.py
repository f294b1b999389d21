"""POPE parsing, label matching by (image, normalised question), metrics, and real question and label lines."""

import json
from pathlib import Path

import pytest
from conftest import GQA_POPE

from llava.eval.scoring.common import read_jsonl
from llava.eval.scoring.pope import load_label_dir, main, normalize_question, parse_pope_answer, score_pope

SUFFIX = "\nAnswer the question using a single word or phrase."


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _q(qid: int, image: str, text: str, cat: str) -> dict:
    return {"question_id": qid, "image": image, "text": text + SUFFIX, "category": cat}


def _l(image: str, text: str, label: str) -> dict:
    return {"question_id": 0, "image": image, "text": text, "label": label}


QUESTIONS = [
    _q(1, "A.jpg", "Is there a dog in the image?", "adversarial"),
    _q(2, "A.jpg", "Is there a cat in the imange?", "adversarial"),  # typo in the question file
    _q(3, "B.jpg", "Is there a car in the image?", "adversarial"),
    _q(4, "A.jpg", "Is there a dog in the image?", "random"),
    _q(5, "B.jpg", "Is there a tree in the image?", "random"),
    _q(6, "B.jpg", "Is there a boat in the image?", "random"),  # no label
]
LABELS = {  # out of question order
    "adversarial": [_l("B.jpg", "Is there a car in the image?", "no"),
                    _l("A.jpg", "Is there a cat in the image?", "yes"),
                    _l("A.jpg", "Is there a dog in the image?", "yes")],
    "random": [_l("B.jpg", "Is there a tree in the image?", "no"),
               _l("A.jpg", "Is there a dog in the image?", "yes"),
               _l("C.jpg", "Is there a bus in the image?", "yes")],
}
TEXTS = {1: "Yes, there is a dog.", 2: "No", 3: "No, there is not.", 4: "yes", 5: "There is no tree.",
         6: "yes"}


def _answers() -> list[dict]:
    return [{"question_id": q["question_id"], "prompt": q["text"], "text": TEXTS[q["question_id"]],
             "answer_id": "x", "model_id": "m", "metadata": {}} for q in QUESTIONS]


def test_parse_and_normalize() -> None:
    assert parse_pope_answer("Yes, there is a dog.") == "yes"
    assert parse_pope_answer("No") == "no"
    assert parse_pope_answer("There is no tree. No.") == "no"
    assert parse_pope_answer("Yes. But no.") == "yes"  # only the first sentence counts
    assert parse_pope_answer("Not really") == "yes"  # reference quirk: only 'No', 'no', 'not'
    assert parse_pope_answer("no,") == "no"
    assert normalize_question(" Is there a cat in the imange? \nAnswer ...") == "Is there a cat in the image?"


def test_pope_hand_metrics() -> None:
    m = score_pope(_answers(), QUESTIONS, LABELS)
    adv, rnd = m["categories"]["adversarial"], m["categories"]["random"]
    # adversarial: q1 TP, q2 FN (typo matched), q3 TN
    assert (adv["tp"], adv["fn"], adv["tn"], adv["fp"]) == (1, 1, 1, 0)
    assert adv["accuracy"] == pytest.approx(200 / 3)
    assert adv["precision"] == pytest.approx(100.0)
    assert adv["recall"] == pytest.approx(50.0)
    assert adv["f1"] == pytest.approx(100 * 2 * 1.0 * 0.5 / 1.5)
    assert adv["yes_ratio"] == pytest.approx(100 / 3)
    # random: q4 TP, q5 TN, q6 has no label
    assert (rnd["n"], rnd["accuracy"], rnd["f1"], rnd["yes_ratio"]) == (2, 100.0, 100.0, 50.0)
    assert m["mean_accuracy"] == pytest.approx((200 / 3 + 100) / 2)
    assert m["mean_f1"] == pytest.approx((200 / 3 + 100) / 2)
    assert m["unmatched_answers"] == 1 and m["unmatched_question_ids"] == [6]
    assert m["unused_labels"] == 1 and m["unused_labels_per_category"] == {"adversarial": 0, "random": 1}
    with pytest.raises(ValueError, match="no label"):
        score_pope(_answers(), QUESTIONS, LABELS, strict=True)


def test_pope_cli_strict_default(tmp_path: Path) -> None:
    ans = _write_jsonl(tmp_path / "answers.jsonl", _answers())
    qf = _write_jsonl(tmp_path / "questions.jsonl", QUESTIONS)
    for cat, rows in LABELS.items():
        _write_jsonl(tmp_path / "coco" / f"coco_pope_{cat}.json", rows)
    assert sorted(load_label_dir(tmp_path / "coco")) == ["adversarial", "random"]
    base = ["--answers", str(ans), "--question-file", str(qf), "--annotation-dir", str(tmp_path / "coco")]
    with pytest.raises(ValueError):
        main(base)
    res = tmp_path / "res.json"
    main(base + ["--no-strict", "--output-json", str(res)])
    record = json.loads(res.read_text())
    assert record["main_metric"] == "mean_accuracy"
    assert record["main_value"] == pytest.approx((200 / 3 + 100) / 2)


def test_pope_real_lines_match() -> None:
    """Real lines: label question_ids restart per category, one question has the `imange` typo, and the question
    file skips a random label (label 18), so only (image, normalised question) pairs them up."""
    questions = read_jsonl(GQA_POPE / "pope" / "llava_pope_test.jsonl")
    labels = load_label_dir(GQA_POPE / "pope" / "coco")
    assert "imange" in questions[2]["text"] and [r["question_id"] for r in labels["random"]] == [17, 18, 19]
    answers = [{"question_id": q["question_id"], "prompt": q["text"], "text": "Yes"} for q in questions]
    m = score_pope(answers, questions, labels, strict=True)
    assert m["unmatched_answers"] == 0 and m["duplicate_answers"] == 0
    assert m["unused_labels_per_category"] == {"adversarial": 0, "popular": 0, "random": 1}
    counts = {c: (v["n"], v["tp"], v["fp"]) for c, v in m["categories"].items()}
    assert counts == {"adversarial": (3, 2, 1), "popular": (2, 1, 1), "random": (2, 2, 0)}
