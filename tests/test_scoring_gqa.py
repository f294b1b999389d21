"""GQA conversion and accuracy."""

import json
from pathlib import Path

import pytest

from llava.eval.scoring.gqa import convert_answers, main, score_gqa


def test_gqa_convert_and_score(tmp_path: Path) -> None:
    answers = [
        {"question_id": "q1", "prompt": "p", "text": "Yes.", "metadata": {}},
        {"question_id": "q2", "prompt": "p", "text": "Red car", "metadata": {}},
        {"question_id": "q9", "prompt": "p", "text": "table", "metadata": {}},
    ]
    preds = convert_answers(answers)
    assert preds[0] == {"questionId": "q1", "prediction": "yes"}
    assert preds[1]["prediction"] == "red car"
    questions = {
        "q1": {"answer": "yes"},
        "q2": {"answer": "red"},
        "q3": {"answer": "table"},
        "q4": {"answer": "no", "isBalanced": False},
    }
    m = score_gqa(preds, questions)
    # q1 right, q2 wrong, q3 missing (wrong); q4 not balanced (ignored); q9 extra
    assert m["accuracy"] == pytest.approx(100 / 3)
    assert (m["correct"], m["total"], m["missing_predictions"], m["extra_predictions"]) == (1, 3, 1, 1)

    ans_file, q_file = tmp_path / "merge.jsonl", tmp_path / "testdev_balanced_questions.json"
    ans_file.write_text("".join(json.dumps(a) + "\n" for a in answers))
    q_file.write_text(json.dumps(questions))
    out, res = tmp_path / "data" / "preds.json", tmp_path / "res.json"
    main(["--answers", str(ans_file), "--predictions-out", str(out), "--questions", str(q_file),
          "--output-json", str(res), "--method", "none", "--budget", "576"])
    assert json.loads(out.read_text()) == preds
    record = json.loads(res.read_text())
    assert record["benchmark"] == "gqa" and record["main_metric"] == "accuracy"
    assert record["main_value"] == pytest.approx(100 / 3) and record["budget"] == 576
