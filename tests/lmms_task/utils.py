"""Prompt and image functions of the local test tasks (rows: question_id, image, text, answer, choices)."""

from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent


def doc_to_visual(doc):
    """The row's image, from images/ beside this file."""
    return [Image.open(HERE / "images" / doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    """The question text exactly as the LLaVA question file holds it."""
    return doc["text"]


def doc_to_choice(doc):
    """Answer options of the multiple-choice task."""
    return doc["choices"]


def doc_to_target_index(doc):
    """Index of the right option."""
    return doc["choices"].index(doc["answer"])
