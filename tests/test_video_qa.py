"""The video QA entry point on the tiny Video-LLaVA with synthetic PyAV clips: answers, resume, a corrupt video."""

from __future__ import annotations

import json

import pytest

av = pytest.importorskip("av")
np = pytest.importorskip("numpy")

from llava.eval.model_video_qa import main  # noqa: E402
from llava.model.multimodal_encoder.languagebind_video import HF_PORT_LABEL, TEMPORAL_LABEL  # noqa: E402
from llava.model.tiny_video import tiny_video_llava_path  # noqa: E402


def write_clip(path, frames: int = 12) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def qa_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("videoqa")
    (root / "videos").mkdir()
    names = ["clip0", "clip1", "clip2"]
    for name in names:
        write_clip(root / "videos" / f"{name}.mp4")
    questions = [{"question_id": f"q{i}", "video_name": name, "question": f"what happens {i}?"}
                 for i, name in enumerate(names)]
    answers = [{"question_id": f"q{i}", "answer": f"answer {i}"} for i in range(len(names))]
    (root / "test_q.json").write_text(json.dumps(questions))
    (root / "test_a.json").write_text(json.dumps(answers))
    return root, tiny_video_llava_path(tmp_path_factory.mktemp("video-cache"))


def argv(root, model, out, *extra, name="1_0"):
    return ["--model_path", str(model), "--video_dir", str(root / "videos"), "--gt_file_question",
            str(root / "test_q.json"), "--gt_file_answers", str(root / "test_a.json"), "--output_dir", str(out),
            "--output_name", name, "--max_new_tokens", "3", "--dtype", "float32", "--device", "cpu", *extra]


def test_answers_every_pair_and_resumes(qa_set, tmp_path):
    root, model = qa_set
    assert main(argv(root, model, tmp_path, "--limit", "2")) == 0
    lines = [json.loads(x) for x in (tmp_path / "1_0.json").read_text().splitlines()]
    assert [(x["id"], x["answer"]) for x in lines] == [("q0", "answer 0"), ("q1", "answer 1")]
    assert all(x["metadata"]["visual_tokens"] == 8 * 257 for x in lines)
    assert main(argv(root, model, tmp_path, "--limit", "3")) == 0
    again = [json.loads(x) for x in (tmp_path / "1_0.json").read_text().splitlines()]
    assert again[:2] == lines and again[2]["id"] == "q2"


def test_corrupt_video_is_a_clear_error_and_keeps_written_answers(qa_set, tmp_path, capsys):
    root, model = qa_set
    broken = tmp_path / "videos"
    broken.mkdir()
    for name in ("clip0", "clip1"):
        (broken / f"{name}.mp4").write_bytes((root / "videos" / f"{name}.mp4").read_bytes())
    (broken / "clip2.mp4").write_bytes(b"not a video")
    args = argv(root, model, tmp_path / "out")
    args[args.index("--video_dir") + 1] = str(broken)
    assert main(args) == 2
    assert "clip2.mp4" in capsys.readouterr().err
    kept = (tmp_path / "out" / "1_0.json").read_text().splitlines()
    assert [json.loads(x)["id"] for x in kept] == ["q0", "q1"]


def test_msvd_script_end_to_end_with_a_local_judge(qa_set, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from test_video_judge import FakeJudge

    root, model = qa_set
    data = tmp_path / "data"
    (data / "msvd").mkdir(parents=True)
    (data / "msvd" / "videos").symlink_to(root / "videos")
    questions = [{"question_id": f"q{i}", "video_name": f"clip{i}", "question": q}
                 for i, q in enumerate(["yes-4", "no-2", "yes-5"])]
    (data / "msvd" / "test_q.json").write_text(json.dumps(questions))
    (data / "msvd" / "test_a.json").write_text((root / "test_a.json").read_text())
    judge = FakeJudge()
    try:
        env = {**os.environ, "MODEL_PATH": str(model), "DATA_ROOT": str(data), "RESULTS_ROOT": str(tmp_path / "res"),
               "DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable, "OPENAI_API_BASE": judge.base,
               "OPENAI_API_KEY": "EMPTY", "JUDGE_MODEL": "fake-judge"}
        repo = Path(__file__).resolve().parents[1]
        done = subprocess.run(["bash", "scripts/eval/msvd.sh", "--max_new_tokens", "2", "--dtype", "float32"],
                              cwd=repo, env=env, capture_output=True, text=True)
    finally:
        judge.server.shutdown()
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(next((tmp_path / "res").rglob("msvd.json")).read_text())
    assert sorted(judge.requests) == ["no-2", "yes-4", "yes-5"]
    assert "fake-judge" in json.dumps(result)
    assert result["accuracy"] == pytest.approx(200 / 3) and result["score"] == pytest.approx(11 / 3)
    assert result["method"] == "none" and result["config_file"].endswith("configs/none/video_llava.yaml")
    assert len(result["config_hash"]) >= 8 and result["config"]["method"] == "none"
    assert result["visual_tokens_per_layer"] == [8 * 257] * 32 and result["samples_with_image"] == 3
    assert result["tower"] == TEMPORAL_LABEL


def test_run_record_carries_the_port_label_and_the_pruned_counts(qa_set, tmp_path):
    """The answers' run record names the tower (-hf port: no temporal attention) and the result fields carry the
    method's measured per-layer counts."""
    from pathlib import Path

    from llava.eval.record import build_extra

    root, model = qa_set
    config = Path(__file__).resolve().parents[1] / "configs" / "visiondrop" / "video_llava_256.yaml"
    assert main(argv(root, model, tmp_path, "--limit", "1", "--config", str(config))) == 0
    extra = build_extra(tmp_path / "1_0.json")
    assert extra["method"] == "visiondrop" and extra["config_file"] == str(config)
    assert extra["visual_tokens_per_layer"] == [768] * 8 + [112] * 8 + [83] * 8 + [61] * 8
    assert extra["visual_tokens_mean"] == 256 and extra["tower"] == TEMPORAL_LABEL
    from test_video_llava import save_hf_port

    port = save_hf_port(model, tmp_path / "port")
    assert main(argv(root, port, tmp_path / "hf", "--limit", "1")) == 0
    assert build_extra(tmp_path / "hf" / "1_0.json")["tower"] == HF_PORT_LABEL


def test_merging_video_chunks_refuses_missing_and_duplicated_ids(qa_set, tmp_path, capsys):
    from llava.eval.merge_chunks import main as merge

    root, model = qa_set
    for k in range(2):
        assert main(argv(root, model, tmp_path, "--num_chunks", "2", "--chunk_idx", str(k), name=f"2_{k}")) == 0
    args = ["--chunk-dir", str(tmp_path), "--num-chunks", "2", "--question-file", str(root / "test_q.json"),
            "--format", "video"]
    capsys.readouterr()
    assert merge(args) == 0
    merged = [json.loads(x)["question_id"] for x in (tmp_path / "merge.jsonl").read_text().splitlines()]
    assert merged == ["q0", "q1", "q2"]
    first = (tmp_path / "2_0.json").read_text()
    (tmp_path / "2_0.json").write_text(first + first.splitlines()[0] + "\n")
    assert merge(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "duplicated answers for question_id q0" in err
    (tmp_path / "2_1.json").write_text("")
    assert merge(args) == 2
    assert "question(s) without an answer: question_id q2" in capsys.readouterr().err
    assert merge([*args, "--limit", "1"]) == 2  # q0 twice, q1 / q2 not among the first one


def test_table_3_lists_acc_and_score_per_dataset_and_their_averages(tmp_path, capsys):
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("make_table", Path(__file__).resolve().parents[1] / "scripts"
                                                  / "make_table.py")
    make_table = importlib.util.module_from_spec(spec)
    sys.modules["make_table"] = make_table
    spec.loader.exec_module(make_table)
    run = tmp_path / "fastv_video_llava_256"
    run.mkdir()
    (run / "msvd.json").write_text(json.dumps({"accuracy": 70.0, "score": 3.9}))
    (run / "tgif.json").write_text(json.dumps({"accuracy": 50.0, "score": 3.1}))
    assert make_table.main([str(tmp_path), "--table", "3"]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert row == "| fastv_video_llava_256 | 50.0 | 3.10 | 70.0 | 3.90 | – | – | 60.0 | 3.50 |"
    (run / "msrvtt.json").write_text("{}")
    assert make_table.main([str(tmp_path), "--table", "3"]) == 2
