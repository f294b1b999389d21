"""Answer-generation pipeline on the tiny random model: every benchmark script end to end, resume, chunk
merging, batching, and clear errors on bad input (answers already written are never lost).

Torch runs single-threaded here: the tiny model gains nothing from threads, and on a busy 2-core machine
OpenMP threads spinning against each other make these tests several times slower.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eval_data import BUILDERS, build_gqa

from llava.eval import merge_chunks, model_vqa_loader

REPO = Path(__file__).resolve().parents[1]
VD64 = str(REPO / "configs/visiondrop/llava15_64.yaml")

# benchmark script -> (data builder, answer file under DATA_ROOT, result name, config, expected answers)
SCRIPTS = {
    "gqa": ("gqa", "gqa/answers/llava_gqa_testdev_balanced/{run}/merge.jsonl", "gqa", VD64, 2),
    "pope": ("pope", "pope/answers/{run}.jsonl", "pope", VD64, 2),
    "mme": ("mme", "MME/answers/{run}.jsonl", "mme", None, 2),
    "textvqa": ("textvqa", "textvqa/answers/{run}.jsonl", "textvqa", VD64, 2),
    "vizwiz": ("vizwiz", "vizwiz/answers/{run}.jsonl", "vizwiz", VD64, 2),
    "vqav2": ("vqav2", "vqav2/answers/llava_vqav2_mscoco_test-dev2015/{run}/merge.jsonl", "vqav2", VD64, 2),
    "sqa": ("sqa", "scienceqa/answers/{run}.jsonl", "scienceqa", VD64, 2),
    "mmbench": ("mmbench", "mmbench/answers/mmbench_dev_20230712/{run}.jsonl", "mmbench", None, 2),
}



def run_script(name: str, data_root: Path, results: Path, model: Path, config: str | None, *extra: str):
    """Run scripts/eval/<name>.sh on CPU with the tiny model; return the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if k not in ("GPUS", "CUDA_VISIBLE_DEVICES", "RUN_NAME")}
    env.update(MODEL_PATH=str(model), DATA_ROOT=str(data_root), RESULTS_ROOT=str(results), DEVICE="cpu",
               PYTHON=sys.executable, OMP_NUM_THREADS="1")
    cmd = ["bash", str(REPO / "scripts/eval" / f"{name}.sh"), *([config] if config else []), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_benchmark_script_end_to_end(name, tiny_path, tmp_path):
    builder, answers_rel, bench, config, n = SCRIPTS[name]
    BUILDERS[builder](tmp_path / "data")
    proc = run_script(name, tmp_path / "data", tmp_path / "results", tiny_path, config, "--max-new-tokens", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = "visiondrop_llava15_64" if config else "none_llava15"
    answers = [json.loads(x) for x in (tmp_path / "data" / answers_rel.format(run=run)).read_text().splitlines()]
    assert len(answers) == n
    for a in answers:
        assert {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"} <= set(a)
        assert "visual_tokens" in a["metadata"]
    record = json.loads((tmp_path / "results" / run / f"{bench}.json").read_text())
    assert record["benchmark"] == bench and record["model"] == tiny_path.name
    assert record["method"] == ("visiondrop" if config else "none") and record["config"]["method"] == record["method"]
    assert len(record["visual_tokens_per_layer"]) == 32 and record["wall_time_s"] is not None
    assert record["visual_tokens_mean"] == pytest.approx(64.0 if config else 576.0)
    if name == "mmbench":
        assert answers[0]["option_char"] == ["A", "B", "C"] and "round_id" in answers[0]
    if name == "sqa":
        assert answers[0]["metadata"]["visual_tokens"] == 0 and answers[1]["prompt"].startswith("<image>\n")


@pytest.fixture()
def gqa_data(tmp_path):
    """(question file, image folder, questions) with 3 GQA questions."""
    rows = build_gqa(tmp_path / "data", n=3)
    return tmp_path / "data/gqa/llava_gqa_testdev_balanced.jsonl", tmp_path / "data/gqa/data/images", rows


def loader(tiny_path, questions, images, answers, *extra) -> int:
    """Run the loader driver in-process (the loaded model is cached between calls)."""
    return model_vqa_loader.main(["--model-path", str(tiny_path), "--question-file", str(questions),
                                  "--image-folder", str(images), "--answers-file", str(answers), "--device", "cpu",
                                  "--max-new-tokens", "4", "--temperature", "0", "--conv-mode", "vicuna_v1", *extra])


def test_resume_skips_answered_and_recovers_torn_line(tiny_path, gqa_data, tmp_path, capsys):
    questions, images, _ = gqa_data
    answers = tmp_path / "a.jsonl"
    assert loader(tiny_path, questions, images, answers) == 0
    full = answers.read_bytes()
    capsys.readouterr()
    assert loader(tiny_path, questions, images, answers) == 0
    assert "0 new answers, 3 already present" in capsys.readouterr().out
    assert answers.read_bytes() == full
    answers.write_bytes(full[:-25])  # a crash in the middle of writing the last line
    assert loader(tiny_path, questions, images, answers) == 0
    assert "1 new answers, 2 already present" in capsys.readouterr().out
    assert answers.read_bytes() == full
    assert loader(tiny_path, questions, images, answers, "--config", VD64) == 2  # other settings: refused
    assert "different pruning" in capsys.readouterr().err and answers.read_bytes() == full


def test_two_chunks_merged_equal_one_chunk(tiny_path, gqa_data, tmp_path, capsys):
    questions, images, rows = gqa_data
    assert loader(tiny_path, questions, images, tmp_path / "one.jsonl") == 0
    for k in range(2):
        assert loader(tiny_path, questions, images, tmp_path / f"chunks/2_{k}.jsonl",
                      "--num-chunks", "2", "--chunk-idx", str(k)) == 0
    assert len((tmp_path / "chunks/2_1.jsonl").read_text().splitlines()) == 1  # ceil(3/2) = 2 + 1
    assert merge_chunks.main(["--chunk-dir", str(tmp_path / "chunks"), "--num-chunks", "2",
                              "--question-file", str(questions)]) == 0
    assert (tmp_path / "chunks/merge.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    chunk1 = tmp_path / "chunks/2_1.jsonl"
    chunk1.write_text(chunk1.read_text() * 2)  # a duplicated answer
    assert merge_chunks.main(["--chunk-dir", str(tmp_path / "chunks"), "--num-chunks", "2",
                              "--question-file", str(questions)]) == 2
    assert f"duplicated answers for question_id {rows[2]['question_id']}" in capsys.readouterr().err
    (tmp_path / "chunks/2_0.jsonl").write_text("")  # questions without an answer
    assert merge_chunks.main(["--chunk-dir", str(tmp_path / "chunks"), "--num-chunks", "2",
                              "--question-file", str(questions)]) == 2
    assert rows[0]["question_id"] in capsys.readouterr().err


def test_batch_size_two_equals_one(tiny_path, gqa_data, tmp_path):
    questions, images, _ = gqa_data
    assert loader(tiny_path, questions, images, tmp_path / "b1.jsonl", "--config", VD64) == 0
    assert loader(tiny_path, questions, images, tmp_path / "b2.jsonl", "--config", VD64, "--batch-size", "2") == 0
    assert (tmp_path / "b2.jsonl").read_text() == (tmp_path / "b1.jsonl").read_text()


def test_bad_input_names_file_and_line_and_keeps_answers(tiny_path, tmp_path, capsys):
    rows = build_gqa(tmp_path / "data", n=3)
    images = tmp_path / "data/gqa/data/images"
    questions, answers = tmp_path / "q.jsonl", tmp_path / "a.jsonl"
    good = "".join(json.dumps(r) + "\n" for r in rows[:2])
    questions.write_text(good)
    assert loader(tiny_path, questions, images, answers) == 0
    kept = answers.read_bytes()
    capsys.readouterr()
    cases = {
        '{"question_id": "x", "image": \n': "line 3: not valid JSON",
        json.dumps({"question_id": "x", "text": "?"}) + "\n": "line 3: missing 'image'",
        json.dumps({**rows[2], "image": "absent.jpg"}) + "\n": f"line 3: image file {images / 'absent.jpg'} not found",
    }
    for third, message in cases.items():
        questions.write_text(good + third)
        assert loader(tiny_path, questions, images, answers) == 2
        err = capsys.readouterr().err
        assert f"question file {questions} {message}" in err, err
        assert answers.read_bytes() == kept
    questions.write_text(good)
    answers.write_bytes(b"{oops\n" + kept)  # a corrupt line inside the answer file
    assert loader(tiny_path, questions, images, answers) == 2
    assert f"answer file {answers} line 1: not valid JSON" in capsys.readouterr().err


def test_missing_data_folder_stops_with_a_clear_message(tiny_path, tmp_path):
    proc = run_script("gqa", tmp_path / "nothing", tmp_path / "results", tiny_path, None)
    assert proc.returncode != 0
    assert f"missing {tmp_path / 'nothing'}/gqa/llava_gqa_testdev_balanced.jsonl" in proc.stderr
    assert "put there" in proc.stderr and not (tmp_path / "results").exists()
