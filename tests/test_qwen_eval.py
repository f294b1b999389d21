"""The benchmark drivers and scripts on a Qwen2.5-VL checkpoint (tiny random one, written in the Qwen2.5-VL layout):
answers of real GQA questions on stand-in images of three sizes, unpruned (the family's default config) and
VisionDrop; the prompt is the checkpoint's chat template; per-layer counts are each image's own schedule; batch 2
equals batch 1; a LLaVA config, and pixel bounds on LLaVA, are refused before anything is written. The driver and
script helpers are tests/test_eval_pipeline.py's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_data import build_gqa, build_sqa, stand_in_image
from test_eval_pipeline import loader, run_script

from llava.eval.prompts import prompt_batch
from llava.eval.questions import read_loader_questions
from llava.model.family import QWEN_FAMILY
from llava.model.language_model.qwen2_5_vl import build_inputs
from visiondrop.config import load_config
from visiondrop.models import Geometry

REPO = Path(__file__).resolve().parents[1]
VD11 = str(REPO / "configs/visiondrop/qwen2_5_vl_11.yaml")
SIZES = ((224, 168), (140, 196), (112, 112))  # 8x6, 5x7 and 4x4 merged tokens at the tiny processor's bounds
TOKENS = [48, 35, 16]


@pytest.fixture(scope="module")
def qwen_path(tmp_path_factory):
    from llava.model.tiny_qwen import tiny_qwen_path

    return tiny_qwen_path(tmp_path_factory.mktemp("tiny-qwen-eval"))


def resize_images(folder: Path, rows: list[dict]) -> None:
    """Give the questions' stand-in images three different sizes (Qwen's token count follows the image size)."""
    for row, size in zip(rows, SIZES):
        stand_in_image(row["image"], size).save(folder / row["image"])


@pytest.fixture()
def gqa(tmp_path):
    """(question file, image folder, question rows): 3 GQA questions, images of 48, 35 and 16 merged tokens."""
    rows = build_gqa(tmp_path / "data", n=3)
    images = tmp_path / "data/gqa/data/images"
    resize_images(images, rows)
    return tmp_path / "data/gqa/llava_gqa_testdev_balanced.jsonl", images, rows


def schedule(config: str, n_image: int) -> list[int]:
    """A config's visual tokens per decoder layer for an image of `n_image` merged tokens (28 layers)."""
    from visiondrop.methods import build_method

    return build_method(load_config(config)).layer_counts(Geometry(n_image, 1, 28, tower_cls=False, variable=True))


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("config", [None, VD11])
def test_loader_answers_with_the_family_config_and_per_image_counts(qwen_path, gqa, tmp_path, capsys, config):
    questions, images, rows = gqa
    answers = tmp_path / "answers.jsonl"
    assert loader(qwen_path, questions, images, answers, *(["--config", config] if config else [])) == 0
    assert "Qwen2.5-VL checkpoint: prompts use its chat template, --conv-mode vicuna_v1 is ignored" in \
        capsys.readouterr().err
    lines = read_lines(answers)
    assert [a["question_id"] for a in lines] == [r["question_id"] for r in rows]
    assert [a["prompt"] for a in lines] == [r["text"] for r in rows]
    for a, n in zip(lines, TOKENS):
        expected = [n] * 28 if config is None else schedule(config, n)
        assert a["metadata"]["visual_tokens_per_layer"] == expected
    assert config is None or lines[0]["metadata"]["visual_tokens"] < TOKENS[0]
    settings = json.loads(answers.with_name("answers.jsonl.run.json").read_text())["settings"]
    assert settings["family"] == QWEN_FAMILY and settings["conv_mode"] == "chat_template"
    assert settings["pruning"]["model"] == QWEN_FAMILY
    assert settings["pruning"]["method"] == ("none" if config is None else "visiondrop")
    batched = tmp_path / "batch2.jsonl"  # a padded batch of two image sizes gives the answers of batch 1
    assert loader(qwen_path, questions, images, batched, *(["--config", config] if config else []),
                  "--batch-size", "2") == 0
    assert batched.read_text() == answers.read_text()


def test_prompt_is_the_chat_template_with_the_image_first(qwen_path, gqa):
    from llava.eval.generation import _MODEL_CACHE
    from llava.model.visiondrop_llava import load_model_for_eval

    questions, images, _ = gqa
    tok, model, image_processor, _ = load_model_for_eval(str(qwen_path))
    _MODEL_CACHE.clear()
    items = read_loader_questions(questions, images)[:2]
    pil = [stand_in_image(item.image_file.name, size) for item, size in zip(items, SIZES)]
    batch = prompt_batch([item.query for item in items], pil, tok, model, image_processor, "vicuna_v1")
    first = tok.decode(batch.input_ids[0, :int(batch.attention_mask[0].sum())])
    assert first == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
                     + "<|image_pad|>" * TOKENS[0] + f"<|vision_end|>{items[0].prompt}<|im_end|>\n"
                     "<|im_start|>assistant\n")
    ids, mask, processed = build_inputs(tok, image_processor, [item.prompt for item in items], pil)
    assert batch.input_ids.equal(ids) and batch.attention_mask.equal(mask)
    assert batch.images["pixel_values"].equal(processed["pixel_values"])
    assert batch.stop_token_id == tok.convert_tokens_to_ids("<|im_end|>")


def test_pixel_bounds_change_the_tokens_and_are_recorded(qwen_path, gqa, tmp_path):
    questions, images, _ = gqa
    answers = tmp_path / "small.jsonl"
    assert loader(qwen_path, questions, images, answers, "--max-pixels", str(56 * 56)) == 0
    # at most 56 x 56 pixels: at most 4 merged tokens (2x1, 1x2, 2x2 after the processor's resize)
    assert [a["metadata"]["visual_tokens_per_layer"][0] for a in read_lines(answers)] == [2, 2, 4]
    settings = json.loads(answers.with_name("small.jsonl.run.json").read_text())["settings"]
    assert (settings["min_pixels"], settings["max_pixels"]) == (None, 56 * 56)
    assert loader(qwen_path, questions, images, answers) == 2  # other pixel bounds: the answers are not reused
    big = tmp_path / "big.jsonl"
    assert loader(qwen_path, questions, images, big, "--min-pixels", str(28 * 28 * 64)) == 0
    assert all(a["metadata"]["visual_tokens_per_layer"][0] >= 64 for a in read_lines(big))


def test_llava_config_on_qwen_is_refused_before_writing(qwen_path, gqa, tmp_path, capsys):
    questions, images, _ = gqa
    answers = tmp_path / "refused.jsonl"
    assert loader(qwen_path, questions, images, answers, "--config", str(REPO / "configs/none/llava15.yaml")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: the pruning config targets model 'llava-v1.5-7b' (llava family) but the "
                              f"checkpoint is a {QWEN_FAMILY} model")
    assert not answers.exists() and not answers.with_name("refused.jsonl.run.json").exists()


def test_pixel_bounds_on_llava_are_refused(tiny_path, gqa, tmp_path, capsys):
    questions, images, _ = gqa
    answers = tmp_path / "llava.jsonl"
    assert loader(tiny_path, questions, images, answers, "--min-pixels", "3136") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: min_pixels / max_pixels bound Qwen2.5-VL's dynamic resolution, but the checkpoint is a "
                   "llava model (fixed input size): drop them"]
    assert not answers.exists()


def test_gqa_script_defaults_to_the_qwen_unpruned_config(qwen_path, gqa, tmp_path):
    proc = run_script("gqa", tmp_path / "data", tmp_path / "results", qwen_path, None, "--max-new-tokens", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "config " + str(REPO / "configs/none/qwen2_5_vl.yaml") in proc.stderr
    record = json.loads((tmp_path / "results/none_qwen2_5_vl/gqa.json").read_text())
    assert record["family"] == QWEN_FAMILY and record["method"] == "none" and record["answers"] == 3
    assert record["generation"]["conv_mode"] == "chat_template"
    assert record["visual_tokens_per_layer"] == [pytest.approx(sum(TOKENS) / 3)] * 28


def test_sqa_script_on_qwen_with_a_text_only_problem(qwen_path, tmp_path):
    build_sqa(tmp_path / "data")
    proc = run_script("sqa", tmp_path / "data", tmp_path / "results", qwen_path, VD11, "--max-new-tokens", "2",
                      "--batch-size", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = read_lines(tmp_path / "data/scienceqa/answers/visiondrop_qwen2_5_vl_11.jsonl")
    assert answers[0]["metadata"]["visual_tokens"] == 0 and answers[1]["metadata"]["visual_tokens"] > 0
    record = json.loads((tmp_path / "results/visiondrop_qwen2_5_vl_11/scienceqa.json").read_text())
    assert record["family"] == QWEN_FAMILY and record["method"] == "visiondrop"
    assert len(record["visual_tokens_per_layer"]) == 28
