"""VQAv2 / VizWiz submission conversion, VizWiz missing-id error, VQAv2 local accuracy."""

import json
from pathlib import Path

import pytest

from llava.eval.scoring import vizwiz
from llava.eval.scoring.vizwiz import MissingPredictionError
from llava.eval.scoring.vqav2 import convert_for_submission, score_vqav2


def test_vizwiz_missing_ids(tmp_path: Path) -> None:
    questions = [{"question_id": i, "image": f"VizWiz_test_{i:08d}.jpg", "text": "q"} for i in range(4)]
    answers = [{"question_id": 0, "text": "Two dogs."}, {"question_id": 2, "text": "Unanswerable"}]
    with pytest.raises(MissingPredictionError, match=r"2 VizWiz questions.*\[1, 3\]"):
        vizwiz.convert_for_submission(answers, questions)
    answers += [{"question_id": 1, "text": "red"}, {"question_id": 3, "text": "The cat"}]
    upload = vizwiz.convert_for_submission(answers, questions)
    assert upload == [{"image": "VizWiz_test_00000000.jpg", "answer": "2 dogs"},
                      {"image": "VizWiz_test_00000001.jpg", "answer": "red"},
                      {"image": "VizWiz_test_00000002.jpg", "answer": "unanswerable"},
                      {"image": "VizWiz_test_00000003.jpg", "answer": "cat"}]
    qf, af, uf = tmp_path / "q.jsonl", tmp_path / "a.jsonl", tmp_path / "up" / "exp.json"
    qf.write_text("".join(json.dumps(q) + "\n" for q in questions))
    af.write_text("".join(json.dumps(a) + "\n" for a in answers))
    vizwiz.main(["--answers", str(af), "--question-file", str(qf), "--upload-file", str(uf)])
    assert json.loads(uf.read_text()) == upload


def test_vqav2_submission_and_local_accuracy() -> None:
    answers = [{"question_id": 1, "text": "Yes"}, {"question_id": 2, "text": "two"}]
    upload, counts = convert_for_submission(answers, [{"question_id": i} for i in (1, 2, 3)])
    assert upload == [{"question_id": 1, "answer": "yes"}, {"question_id": 2, "answer": "2"},
                      {"question_id": 3, "answer": ""}]
    assert counts["missing"] == 1 and counts["answered"] == 2
    annotations = [
        {"question_id": 1, "answers": [{"answer": "yes"}] * 10},  # 1.0
        {"question_id": 2, "answers": [{"answer": "2"}] * 2 + [{"answer": "3"}] * 8},  # 0.6
        {"question_id": 3, "answers": [{"answer": "no"}] * 10},  # missing -> 0
    ]
    m = score_vqav2(answers, annotations)
    assert m["accuracy"] == pytest.approx(100 * 1.6 / 3)
    assert m["missing_answers"] == 1
