"""Bad input as a hostile user gives it: each case is one line on stderr naming the file / key / value and the fix,
a non-zero exit status, and every output already there left byte-identical."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_run_trust import SPLIT, build_gqa, loader

REPO = Path(__file__).resolve().parents[1]
VD64 = str(REPO / "configs/visiondrop/llava15_64.yaml")


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def answered(tiny_path, tmp_path):
    """A folder with question data and a finished answer file (and its run record)."""
    build_gqa(tmp_path / "data", n=2)
    assert loader(tiny_path, tmp_path) == 0
    return tmp_path


def no_tokenizer_model(tiny_path: Path, root: Path) -> Path:
    """A copy of the tiny checkpoint without its tokenizer files."""
    copy = root / "ckpt-no-tokenizer"
    shutil.copytree(tiny_path, copy)
    for name in ("tokenizer.model", "tokenizer.json"):
        (copy / name).unlink(missing_ok=True)
    return copy


def torn_question_file(root: Path) -> Path:
    """A question file whose second line has an unterminated string."""
    path = root / "torn.jsonl"
    first = (root / f"data/gqa/{SPLIT}.jsonl").read_text().splitlines()[0]
    path.write_text(first + '\n{"question_id": "q9", "text": "Is it')
    return path


CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA / a machine without GPU")
CASES = {
    "config boolean merge=maybe": (
        lambda m, r: loader(m, r, "--config", VD64, "--set", "merge=maybe"),
        f"error: config {VD64}: merge: expected true or false, got 'maybe'"),
    "config list with a string": (
        lambda m, r: loader(m, r, "--config", VD64, "--set", "llm.layers=[8,16,x]"),
        f"error: config {VD64}: llm.layers: expected a list of integers, got [8, 16, 'x']"),
    "answers path is a folder": (
        lambda m, r: loader(m, r, answers=r / "data"),
        "error: --answers-file {root}/data is a folder; give a file path, e.g. {root}/data/answers.jsonl"),
    "tokenizer files missing": (
        lambda m, r: loader(no_tokenizer_model(m, r), r, "--overwrite", answers=r / "b.jsonl"),
        "error: model path {root}/ckpt-no-tokenizer has no tokenizer files (tokenizer.model or tokenizer.json); "
        "copy them (with tokenizer_config.json) from the original checkpoint"),
    "torn question line": (
        lambda m, r: loader(m, r, questions=torn_question_file(r)),
        "error: question file {root}/torn.jsonl line 2: not valid JSON (Unterminated string starting at column "
        "31); fix or remove the line, or re-download the question file"),
    "changed config on resume": (
        lambda m, r: loader(m, r, "--config", VD64),
        "error: answer file {root}/a.jsonl was written with different pruning (see {root}/a.jsonl.run.json); "
        "rerun with --overwrite to regenerate them, or use another answer file / RUN_NAME"),
}


@pytest.mark.parametrize("case", [*CASES, pytest.param("device cuda without CUDA", marks=CPU_ONLY)])
def test_bad_input_is_one_line_and_changes_nothing(case, tiny_path, answered, capsys):
    if case == "device cuda without CUDA":
        call = lambda m, r: loader(m, r, "--device", "cuda")  # noqa: E731
        message = (f"error: --device cuda: this torch ({torch.__version__}) has no CUDA support; use --device cpu, "
                   "or a machine / torch build with CUDA")
    else:
        call, message = CASES[case]
    before = snapshot(answered)
    capsys.readouterr()
    assert call(tiny_path, answered) != 0
    err = capsys.readouterr().err
    assert err == message.format(root=answered) + "\n"
    after = snapshot(answered)
    assert {k: v for k, v in after.items() if k in before} == before  # existing outputs untouched
    assert not [k for k in after if k not in before and not k.startswith(("ckpt-", "torn"))]


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    out = tmp_path / "results"
    (out / "visiondrop_llava15_64").mkdir(parents=True)
    (out / "visiondrop_llava15_64/gqa.json").write_text(json.dumps({"benchmark": "gqa", "metrics": {}}))
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, str(REPO / "scripts/demo.py"), "--out", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr == (f"error: --out {out} exists, is not empty and was not made by the demo; give a new or "
                           "empty folder (nothing was changed)\n")
    assert snapshot(tmp_path) == before
