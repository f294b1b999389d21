"""MME conversion (question recovery, double-space fallback) and acc / acc+ / score."""

from pathlib import Path

import pytest

from llava.eval.scoring.mme import convert_answers, load_ground_truth, parse_pred, score_mme, write_txt_files

SUFFIX = "\nAnswer the question using a single word or phrase."
YN = " Please answer yes or no."
GT = {
    ("existence", "0001.txt", "Is there a dog in this image?" + YN): "Yes",
    ("existence", "0001.txt", "Is there a cat in this image?" + YN): "No",
    ("existence", "0002.txt", "Is there a car in this image?" + YN): "Yes",
    ("existence", "0002.txt", "Is there a bus in this image?" + YN): "No",
    ("code_reasoning", "0010.txt", "Is a python code shown in the picture? " + YN): "Yes",  # double space
    ("code_reasoning", "0010.txt", "Is a c++ code shown in the picture? " + YN): "No",
}


def _ans(qid: str, question: str, text: str) -> dict:
    return {"question_id": qid, "prompt": question + SUFFIX, "text": text, "answer_id": "x", "model_id": "m",
            "metadata": {}}


ANSWERS = [
    _ans("existence/0001.png", "Is there a dog in this image?", "Yes"),  # right
    _ans("existence/0001.png", "Is there a cat in this image?", "No"),  # right -> image 1 both right
    _ans("existence/0002.png", "Is there a car in this image?", "yes, there is"),  # 'yes' in first 4 -> right
    _ans("existence/0002.png", "Is there a bus in this image?", "Yes"),  # wrong
    _ans("code_reasoning/0010.png", "Is a python code shown in the picture?", "Maybe"),  # other -> wrong
    _ans("code_reasoning/0010.png", "Is a c++ code shown in the picture?", "no"),  # right
]


def test_parse_pred() -> None:
    assert parse_pred("Yes") == "yes"
    assert parse_pred("No.") == "no"
    assert parse_pred("Not sure") == "no"  # 'no' within the first 4 characters
    assert parse_pred("Maybe") == "other"


def test_mme_scores(tmp_path: Path) -> None:
    converted = convert_answers(ANSWERS, GT)
    assert converted["code_reasoning"][0][1] == "Is a python code shown in the picture? " + YN
    m = score_mme(converted)
    ex, code = m["subtasks"]["existence"], m["subtasks"]["code_reasoning"]
    assert (ex["acc"], ex["acc_plus"], ex["score"]) == (75.0, 50.0, 125.0)
    assert (code["acc"], code["acc_plus"], code["score"], code["other_answers"]) == (50.0, 0.0, 50.0, 1)
    assert (m["perception"], m["cognition"], m["perception_cognition"]) == (125.0, 50.0, 175.0)
    assert "color" in m["missing_subtasks"]
    paths = write_txt_files(converted, tmp_path / "eval_tool" / "answers" / "exp")
    lines = (tmp_path / "eval_tool" / "answers" / "exp" / "existence.txt").read_text().splitlines()
    assert len(paths) == 2
    assert lines[2] == "0002.png\tIs there a car in this image?" + YN + "\tYes\tyes, there is"


def test_mme_pairs_required() -> None:
    with pytest.raises(ValueError, match="2 questions per image"):
        score_mme(convert_answers(ANSWERS[:3], GT))


def test_load_ground_truth_both_layouts(tmp_path: Path) -> None:
    release = tmp_path / "MME_Benchmark_release_version"
    (release / "existence" / "images").mkdir(parents=True)
    qa = release / "existence" / "questions_answers_YN"
    qa.mkdir()
    (qa / "0001.txt").write_text(f"Is there a dog in this image?{YN}\tYes\n"
                                 f"Is there a cat in this image?{YN}\tNo\n")
    (release / "code_reasoning").mkdir()
    (release / "code_reasoning" / "0010.txt").write_text(
        f"Is a python code shown in the picture? {YN}\tYes\n")
    gt = load_ground_truth(release)
    assert gt == {k: v for k, v in GT.items() if k[1] in ("0001.txt",)} | {
        ("code_reasoning", "0010.txt", "Is a python code shown in the picture? " + YN): "Yes"}
