"""TextVQA matching by (image id, question) and accuracy."""

import pytest

from llava.eval.scoring.textvqa import question_from_prompt, score_textvqa

SUFFIX = "\nAnswer the question using a single word or phrase."
ANNOTATIONS = [
    {"image_id": "img1", "question": "What brand?", "answers": ["nike"] * 10},
    {"image_id": "img1", "question": "What color is it?", "answers": ["red"] * 3 + ["blue"] * 7},
    {"image_id": "img2", "question": "What number?", "answers": ["2"] * 10},
]


def _ans(qid: str, prompt: str, text: str) -> dict:
    return {"question_id": qid, "prompt": prompt, "text": text, "answer_id": "x", "model_id": "m",
            "metadata": {}}


def test_question_from_prompt() -> None:
    assert question_from_prompt("What Brand?\nReference OCR token: A, B" + SUFFIX) == "what brand?"
    assert question_from_prompt("Reference OCR token: A\nWhat number?" + SUFFIX) == "what number?"
    assert question_from_prompt("What number?" + SUFFIX) == "what number?"
    with pytest.raises(ValueError):
        question_from_prompt("one line only")


def test_textvqa_two_questions_same_image() -> None:
    answers = [
        _ans("img1", "What brand?\nReference OCR token: NIKE, shoe" + SUFFIX, "Nike"),  # 1.0
        _ans("img1", "What color is it?\nReference OCR token: x" + SUFFIX, "Red."),  # 3 of 10 -> 0.9
        _ans("img2", "What number?" + SUFFIX, "two"),  # "two" -> "2" -> 1.0
    ]
    m = score_textvqa(answers, ANNOTATIONS)
    assert m["accuracy"] == pytest.approx(100 * (1.0 + 0.9 + 1.0) / 3)
    assert (m["total"], m["unmatched_answers"]) == (3, 0)


def test_textvqa_unmatched() -> None:
    answers = [_ans("img1", "What brand?" + SUFFIX, "nike"), _ans("img3", "Who?" + SUFFIX, "me")]
    with pytest.raises(ValueError, match="no annotation"):
        score_textvqa(answers, ANNOTATIONS)
    m = score_textvqa(answers, ANNOTATIONS, strict=False)
    assert (m["accuracy"], m["total"], m["unmatched_answers"]) == (100.0, 1, 1)
