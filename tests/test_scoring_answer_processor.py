"""EvalAIAnswerProcessor (docs/pipeline.md, 'EvalAI answer normalisation') and the VQA accuracy formula."""

import pytest

from llava.eval.scoring.answer_processor import EvalAIAnswerProcessor, main, vqa_accuracy

PROC = EvalAIAnswerProcessor()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Two dogs.", "2 dogs"),  # number word, trailing period removed
        ("The answer is 3.5", "answer is 3.5"),  # article dropped, decimal period kept
        ("3.14.", "3.14"),  # only the period not followed by a digit goes
        ("It's a dog", "it 's dog"),  # "'s" split off, article dropped
        ("dont know", "don't know"),  # contraction map
        ("Isnt it", "isn't it"),
        ("hes", "he's"),
        ("Yes!", "yes"),  # '!' not next to a space -> replaced by a space, then collapsed
        ("red-white", "red white"),  # '-' inside a word -> space
        ("red - white", "red white"),  # ' -' present -> '-' deleted
        ("(a) cat", "cat"),  # '(' -> space, ') ' present -> ')' deleted, article dropped
        ("Hello, World?", "hello world"),  # ',' and '?' deleted by word_tokenize
        ("1,000", "1000"),
        ("U.S.A.", "usa"),
        ("none", "0"),
        ("ten", "10"),
        ("An apple\tand\nthe pear", "apple and pear"),
        ("  Zero  ", "0"),
    ],
)
def test_processor_tricky_strings(raw: str, expected: str) -> None:
    assert PROC(raw) == expected


def test_period_regex_count_quirk() -> None:
    # re.UNICODE (32) is passed as the count: only the first 32 of 40 periods are removed.
    assert PROC("x" + "." * 40) == "x" + "." * 8


def test_vqa_accuracy_hand_values() -> None:
    gts = ["yes"] * 2 + ["no"] * 8
    # pred "yes": 2 subsets drop a "yes" (1 match -> 1/3), 8 subsets keep both (2 matches -> 2/3)
    assert vqa_accuracy("yes", gts) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    assert vqa_accuracy("yes", gts) == pytest.approx(0.6)
    assert vqa_accuracy("no", gts) == pytest.approx(1.0)
    assert vqa_accuracy("maybe", gts) == 0.0
    gts3 = ["cat"] * 3 + ["dog"] * 7
    assert vqa_accuracy("cat", gts3) == pytest.approx((3 * (2 / 3) + 7 * 1.0) / 10)


def test_vqa_accuracy_with_processor() -> None:
    gts = ["2"] * 10
    assert vqa_accuracy("Two.", gts) == 0.0
    assert vqa_accuracy("Two.", gts, PROC) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        vqa_accuracy("x", [])


def test_cli(capsys: pytest.CaptureFixture) -> None:
    main(["Two dogs.", "--gt", "2 dogs"])
    assert "'2 dogs'" in capsys.readouterr().out
