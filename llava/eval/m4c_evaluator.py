"""LLaVA's `m4c_evaluator` import path: the EvalAI answer processor and the TextVQA / ST-VQA accuracy
evaluators over `[{"pred_answer", "gt_answers"}]`, on top of `llava.eval.scoring.answer_processor`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from llava.eval.scoring.answer_processor import EvalAIAnswerProcessor, vqa_accuracy

__all__ = ["EvalAIAnswerProcessor", "STVQAAccuracyEvaluator", "TextVQAAccuracyEvaluator"]


class TextVQAAccuracyEvaluator:
    """Mean VQA soft accuracy (leave-one-annotator-out, min(1, matches / 3)) of processed answers, in [0, 1]."""

    def __init__(self) -> None:
        self.answer_processor = EvalAIAnswerProcessor()

    def eval_pred_list(self, pred_list: Iterable[Mapping[str, Any]]) -> float:
        """Accuracy over the entries (each `pred_answer` against its `gt_answers`)."""
        scores = [vqa_accuracy(e["pred_answer"], e["gt_answers"], self.answer_processor) for e in pred_list]
        return sum(scores) / len(scores)


class STVQAAccuracyEvaluator:
    """Exact-match accuracy of the processed prediction against any processed ground truth, in [0, 1]."""

    def __init__(self) -> None:
        self.answer_processor = EvalAIAnswerProcessor()

    def eval_pred_list(self, pred_list: Iterable[Mapping[str, Any]]) -> float:
        """Share of entries whose processed `pred_answer` is one of the processed `gt_answers`."""
        proc = self.answer_processor
        scores = [float(proc(e["pred_answer"]) in {proc(a) for a in e["gt_answers"]}) for e in pred_list]
        return sum(scores) / len(scores)
