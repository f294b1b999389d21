"""Runs that cannot lose, mix or silently reuse answers: Ctrl-C of a multi-chunk script, one writer per answer
file, refusal on a changed code version or config, the run identity, and `--config` naming the run.

Data are synthetic GQA-style questions with stand-in images, built in the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from llava.eval import model_vqa_loader
from llava.eval.run_guard import code_version

REPO = Path(__file__).resolve().parents[1]
VD64 = str(REPO / "configs/visiondrop/llava15_64.yaml")
SPLIT = "llava_gqa_testdev_balanced"


def build_gqa(root: Path, n: int) -> list[dict]:
    """A GQA-shaped DATA_ROOT with n questions, one stand-in image each; returns the question rows."""
    gqa = root / "gqa"
    (gqa / "data/images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.new("RGB", (64, 48), (5 * i % 256, 120, 200 - i % 200)).save(gqa / f"data/images/img{i}.jpg")
        rows.append({"question_id": f"q{i}", "image": f"img{i}.jpg", "category": "default",
                     "text": f"Is object {i} red?\nAnswer the question using a single word or phrase."})
    (gqa / f"{SPLIT}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    truth = {r["question_id"]: {"answer": "yes", "isBalanced": True} for r in rows}
    (gqa / "data/testdev_balanced_questions.json").write_text(json.dumps(truth))
    return rows


def script_env(tiny_path: Path, tmp_path: Path, **more: str) -> dict[str, str]:
    """Environment of a CPU run of scripts/eval/*.sh on the tiny model."""
    env = {k: v for k, v in os.environ.items() if k not in ("GPUS", "CUDA_VISIBLE_DEVICES", "RUN_NAME")}
    env.update(MODEL_PATH=str(tiny_path), DATA_ROOT=str(tmp_path / "data"), RESULTS_ROOT=str(tmp_path / "results"),
               DEVICE="cpu", PYTHON=sys.executable, OMP_NUM_THREADS="1", **more)
    return env


def test_sigint_stops_every_chunk_and_the_rerun_resumes(tiny_path, tmp_path):
    rows = build_gqa(tmp_path / "data", n=60)
    answers = tmp_path / f"data/gqa/answers/{SPLIT}/none_llava15"
    cmd = ["bash", str(REPO / "scripts/eval/gqa.sh"), "--max-new-tokens", "16"]
    env = script_env(tiny_path, tmp_path, CHUNKS="2")
    # SIGINT at its default in the script even when pytest itself was started with it ignored (in the background)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not all((answers / f"2_{k}.jsonl").is_file() and (answers / f"2_{k}.jsonl").stat().st_size
                  for k in range(2)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group gets SIGINT
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted (SIGINT)" in err and f"resume with the same environment and: bash {cmd[1]}" in err
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # no process of the run is left
    assert not (answers / "merge.jsonl").exists() and not list(answers.glob("*.lock"))
    written = sum(len((answers / f"2_{k}.jsonl").read_text().splitlines()) for k in range(2))
    assert 2 <= written < len(rows)

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already present" in again.stdout
    merged = [json.loads(x)["question_id"] for x in (answers / "merge.jsonl").read_text().splitlines()]
    assert sorted(merged) == sorted(r["question_id"] for r in rows)  # every question exactly once


def test_config_option_names_the_run(tiny_path, tmp_path):
    build_gqa(tmp_path / "data", n=2)
    proc = subprocess.run(["bash", str(REPO / "scripts/eval/gqa.sh"), "--config", VD64, "--max-new-tokens", "2"],
                          env=script_env(tiny_path, tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "results/visiondrop_llava15_64/gqa.json").read_text())
    assert record["method"] == "visiondrop" and record["run"] == "visiondrop_llava15_64"
    assert not (tmp_path / "results/none_llava15").exists()
    both = subprocess.run(["bash", str(REPO / "scripts/eval/gqa.sh"), VD64, "--config", "configs/none/llava15.yaml"],
                          env=script_env(tiny_path, tmp_path), capture_output=True, text=True, timeout=600)
    assert both.returncode != 0 and "two configs given" in both.stderr


def loader(model: Path, root: Path, *extra: str, questions: Path | None = None, answers: Path | None = None) -> int:
    """The loader driver in-process on the synthetic GQA data under root/data (answers: root/a.jsonl)."""
    return model_vqa_loader.main([
        "--model-path", str(model), "--question-file", str(questions or root / f"data/gqa/{SPLIT}.jsonl"),
        "--image-folder", str(root / "data/gqa/data/images"), "--answers-file", str(answers or root / "a.jsonl"),
        "--device", "cpu", "--max-new-tokens", "3", *extra])


def test_a_second_writer_is_refused_and_a_crashed_one_leaves_no_lock(tiny_path, tmp_path, capsys):
    build_gqa(tmp_path / "data", n=2)
    answers = tmp_path / "a.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from llava.eval.run_guard import AnswerLock\n"
         f"with AnswerLock({str(answers)!r}):\n    print('locked', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert loader(tiny_path, tmp_path) == 2
        assert f"answer file {answers} is being written by another run (pid {holder.pid})" in capsys.readouterr().err
        assert not answers.exists()
    finally:
        holder.kill()  # a crash: no clean-up runs
        holder.wait()
    assert loader(tiny_path, tmp_path) == 0
    assert len(answers.read_text().splitlines()) == 2


def test_changed_code_or_config_is_refused_unless_overwrite(tiny_path, tmp_path, capsys):
    build_gqa(tmp_path / "data", n=2)
    answers = tmp_path / "a.jsonl"
    run_file = tmp_path / "a.jsonl.run.json"
    assert loader(tiny_path, tmp_path) == 0
    info = json.loads(run_file.read_text())
    assert info["settings"]["code_version"] == code_version() and len(info["settings"]["config_hash"]) == 12
    info["settings"]["code_version"] = "git:0123456789ab"  # as if the answers came from an older commit
    run_file.write_text(json.dumps(info))
    kept = answers.read_bytes(), run_file.read_bytes()
    capsys.readouterr()
    assert loader(tiny_path, tmp_path) == 2
    assert f"answer file {answers} was written with different code_version" in capsys.readouterr().err
    assert (answers.read_bytes(), run_file.read_bytes()) == kept
    assert loader(tiny_path, tmp_path, "--config", VD64) == 2
    assert "different pruning, code_version" in capsys.readouterr().err
    assert loader(tiny_path, tmp_path, "--config", VD64, "--overwrite") == 0
    assert "2 new answers, 0 already present" in capsys.readouterr().out
    info = json.loads(run_file.read_text())
    assert info["settings"]["pruning"]["method"] == "visiondrop" and info["settings"]["code_version"] == code_version()
    assert [r["new_answers"] for r in info["runs"]] == [2]
    assert [json.loads(x)["metadata"]["visual_tokens"] for x in answers.read_text().splitlines()] == [64.0, 64.0]
    run_file.unlink()  # answers whose origin is unknown are not reused either
    assert loader(tiny_path, tmp_path, "--config", VD64) == 2
    assert "has answers but no run record a.jsonl.run.json" in capsys.readouterr().err


def git(root: Path, *args: str) -> None:
    """Run git quietly in root."""
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                   env=dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                            GIT_COMMITTER_EMAIL="t@t"))


def test_code_version_follows_commits_and_source_edits(tmp_path):
    (tmp_path / "llava").mkdir()
    (tmp_path / "llava/a.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("docs\n")
    plain = code_version.__wrapped__(tmp_path)
    assert plain.startswith("pkg:")
    (tmp_path / "llava/a.py").write_text("x = 2\n")
    assert code_version.__wrapped__(tmp_path) != plain
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "one")
    clean = code_version.__wrapped__(tmp_path)
    assert clean.startswith("git:") and "+dirty" not in clean
    (tmp_path / "README.md").write_text("more docs\n")  # not answer-producing code
    assert code_version.__wrapped__(tmp_path) == clean
    (tmp_path / "llava/a.py").write_text("x = 3\n")
    dirty = code_version.__wrapped__(tmp_path)
    assert dirty.startswith(clean + "+dirty:")
    (tmp_path / "llava/b.py").write_text("y = 1\n")  # a new, untracked source file
    assert code_version.__wrapped__(tmp_path) not in (clean, dirty)


@pytest.mark.parametrize("module", ["llava.eval.model_vqa_loader", "llava.eval.model_vqa_science",
                                    "llava.eval.model_vqa_mmbench", "llava.eval.merge_chunks", "llava.eval.record",
                                    "llava.eval.model_vqa", "llava.eval.run_llava"])
def test_help_does_not_import_torch(module):
    code = (f"import runpy, sys\nsys.argv = ['x', '--help']\ntry:\n    runpy.run_module({module!r}, "
            "run_name='__main__')\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0 and "usage:" in proc.stdout and proc.stdout.splitlines()[-1] == "False"
