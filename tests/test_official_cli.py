"""LLaVA's own evaluation command lines (scripts/v1_5/eval/*.sh of haotian-liu/LLaVA) on the tiny model.

Each command below is the official script's line with `liuhaotian/llava-v1.5-13b` standing for the tiny
checkpoint; the `python -m` ones run in-process (the loaded model is reused), the `python path.py` ones as
`__main__` scripts, from a folder holding `./playground/data/eval`. Generation lines get `--max_new_tokens 3`
appended for CPU time (their defaults, 128 / 1024 as in LLaVA, are checked in test_official_defaults).
Question lines come from tests/data/llava_eval (sources in its README); images are stand-ins.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib
import json
import runpy
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from eval_data import build_mmbench, build_vqav2, save_image
from test_scoring_mmbench import read_xlsx

from llava.eval import model_vqa_loader, model_vqa_mmbench, model_vqa_science, run_llava
from llava.mm_utils import get_model_name_from_path, process_images

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data/llava_eval"
EVAL = "./playground/data/eval"
KEYS = {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
FAST = " --max_new_tokens 3"


def official(command: str, model: Path) -> int:
    """Run one official command line (the model name replaced by the tiny checkpoint); return its exit status."""
    argv = shlex.split(command.replace("liuhaotian/llava-v1.5-13b", str(model)))
    assert argv[0] == "python"
    old = sys.argv
    sys.argv = [str(REPO / argv[1]), *argv[2:]]
    try:
        if argv[1] == "-m":
            return importlib.import_module(argv[2]).main(argv[3:]) or 0
        runpy.run_path(str(REPO / argv[1]), run_name="__main__")
    except SystemExit as stop:
        if isinstance(stop.code, str):  # what the interpreter prints for sys.exit("message")
            print(stop.code, file=sys.stderr)
            return 1
        return stop.code or 0
    finally:
        sys.argv = old
    return 0


def lines(path: str | Path) -> list[dict]:
    """The JSON lines of a file."""
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def set_texts(path: str, texts: list[str]) -> None:
    """Give the answers of an answer file known texts (the tiny model's answers are random)."""
    rows = lines(path)
    Path(path).write_text("".join(json.dumps({**r, "text": t}) + "\n" for r, t in zip(rows, texts)))


@pytest.fixture()
def playground(tmp_path, monkeypatch) -> Path:
    """tmp_path as the working directory, with ./playground/data/eval holding the question files and images."""
    root = tmp_path / "playground/data/eval"
    shutil.copytree(DATA, root, ignore=shutil.ignore_patterns("README.md"))
    folders = {"gqa": "gqa/data/images", "pope": "pope/val2014", "textvqa": "textvqa/train_images",
               "vizwiz": "vizwiz/test"}
    for bench, folder in folders.items():
        for path in root.glob(f"{bench}/*.jsonl"):
            for row in lines(path):
                save_image(root / folder / row["image"], row["image"])
    for entry in json.loads((root / "scienceqa/llava_test_CQM-A.json").read_text()):
        if "image" in entry:
            save_image(root / "scienceqa/images/test" / entry["image"], entry["image"])
    monkeypatch.chdir(tmp_path)
    return root


def test_gqa_two_chunks_merge_and_convert(tiny_path, playground):
    split, ckpt = "llava_gqa_testdev_balanced", "llava-v1.5-13b"
    answers = f"{EVAL}/gqa/answers/{split}/{ckpt}"
    for idx in range(2):
        assert official(f"python -m llava.eval.model_vqa_loader --model-path liuhaotian/llava-v1.5-13b "
                        f"--question-file {EVAL}/gqa/{split}.jsonl --image-folder {EVAL}/gqa/data/images "
                        f"--answers-file {answers}/2_{idx}.jsonl --num-chunks 2 --chunk-idx {idx} --temperature 0 "
                        "--conv-mode vicuna_v1" + FAST, tiny_path) == 0
    chunks = [lines(f"{answers}/2_{idx}.jsonl") for idx in range(2)]
    assert [len(c) for c in chunks] == [2, 1]  # LLaVA's split: slices of ceil(3 / 2)
    assert official(f"python -m llava.eval.model_vqa_loader --model-path liuhaotian/llava-v1.5-13b "
                    f"--question-file {EVAL}/gqa/{split}.jsonl --image-folder {EVAL}/gqa/data/images "
                    f"--answers-file {answers}/4_3.jsonl --num-chunks 4 --chunk-idx 3", tiny_path) == 0
    assert Path(f"{answers}/4_3.jsonl").read_text() == ""  # slices of 1: the fourth chunk is empty
    merged = Path(f"{answers}/merge.jsonl")
    merged.write_text("".join(Path(f"{answers}/2_{idx}.jsonl").read_text() for idx in range(2)))
    questions = lines(playground / f"gqa/{split}.jsonl")
    for answer, question in zip(chunks[0] + chunks[1], questions):
        assert set(answer) == KEYS and answer["model_id"] == tiny_path.name
        assert (answer["question_id"], answer["prompt"]) == (question["question_id"], question["text"])
    set_texts(merged, ["Yes.", "Left", "no"])
    dst = playground / "gqa/data/testdev_balanced_predictions.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts/convert_gqa_for_eval.py"), "--src", str(merged),
                           "--dst", str(dst)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(dst.read_text()) == [{"questionId": q["question_id"], "prediction": p}
                                           for q, p in zip(questions, ["yes", "left", "no"])]


def test_pope_and_eval_pope(tiny_path, playground, capsys):
    answers = f"{EVAL}/pope/answers/llava-v1.5-13b.jsonl"
    assert official(f"python -m llava.eval.model_vqa_loader --model-path liuhaotian/llava-v1.5-13b "
                    f"--question-file {EVAL}/pope/llava_pope_test.jsonl --image-folder {EVAL}/pope/val2014 "
                    f"--answers-file {answers} --temperature 0 --conv-mode vicuna_v1" + FAST, tiny_path) == 0
    assert all(set(a) == KEYS for a in lines(answers))
    set_texts(answers, ["Yes, there is a snowboard.", "No."])  # labels: yes, no
    capsys.readouterr()
    assert official(f"python llava/eval/eval_pope.py --annotation-dir {EVAL}/pope/coco "
                    f"--question-file {EVAL}/pope/llava_pope_test.jsonl --result-file {answers}", tiny_path) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == ["Category: adversarial, # samples: 2", "TP\tFP\tTN\tFN\t", "1\t0\t1\t0", "Accuracy: 1.0"]
    assert out[8:10] == ["1.000, 1.000, 1.000, 1.000, 0.500", "=" * 36]


def test_sqa_and_eval_science_qa(tiny_path, playground, capsys):
    answers = f"{EVAL}/scienceqa/answers/llava-v1.5-13b.jsonl"
    assert official(f"python -m llava.eval.model_vqa_science --model-path liuhaotian/llava-v1.5-13b "
                    f"--question-file {EVAL}/scienceqa/llava_test_CQM-A.json "
                    f"--image-folder {EVAL}/scienceqa/images/test "
                    f"--answers-file {answers} --single-pred-prompt --temperature 0 --conv-mode vicuna_v1" + FAST,
                    tiny_path) == 0
    text_only, with_image = lines(answers)
    suffix = "\nAnswer with the option's letter from the given choices directly."
    assert text_only["prompt"].endswith("A. chiasmus\nB. apostrophe" + suffix) and "<image>" not in text_only["prompt"]
    assert with_image["prompt"].startswith("<image>\nContext: ") and with_image["prompt"].endswith(suffix)
    assert with_image["metadata"]["visual_tokens"] == 576 and text_only["metadata"]["visual_tokens"] == 0
    set_texts(answers, ["B", "A"])  # problem 4 right, problem 5 (with image) wrong
    capsys.readouterr()
    out = f"{EVAL}/scienceqa/answers/llava-v1.5-13b"
    assert official(f"python llava/eval/eval_science_qa.py --base-dir {EVAL}/scienceqa --result-file {answers} "
                    f"--output-file {out}_output.jsonl --output-result {out}_result.json", tiny_path) == 0
    assert capsys.readouterr().out == "Total: 2, Correct: 1, Accuracy: 50.00%, IMG-Accuracy: 0.00%\n"
    result = json.loads(Path(f"{out}_result.json").read_text())
    assert (result["acc"], result["correct"], result["count"]) == (50.0, 1, 2)
    assert result["results"] == {"4": 1, "5": 0} and result["outputs"] == {"4": "B", "5": "A"}
    analyses = json.loads(Path(f"{out}_output.jsonl").read_text())
    assert [a["question_id"] for a in analyses["correct"]] == ["4"]
    assert analyses["incorrect"][0] == {"question_id": "5", "parsed_ans": "A", "ground_truth": "B",
                                        "question": with_image["prompt"], "pred": "A", "is_multimodal": True}


def test_textvqa_and_eval_textvqa(tiny_path, playground, capsys):
    answers = f"{EVAL}/textvqa/answers/llava-v1.5-13b.jsonl"
    questions = lines(playground / "textvqa/llava_textvqa_val_v051_ocr.jsonl")
    data = [{"image_id": q["question_id"], "question": q["text"].split("\n")[0], "answers": ["nokia"] * 10}
            for q in questions]
    (playground / "textvqa/TextVQA_0.5.1_val.json").write_text(json.dumps({"data": data}))
    assert official(f"python -m llava.eval.model_vqa_loader --model-path liuhaotian/llava-v1.5-13b "
                    f"--question-file {EVAL}/textvqa/llava_textvqa_val_v051_ocr.jsonl "
                    f"--image-folder {EVAL}/textvqa/train_images --answers-file {answers} --temperature 0 "
                    "--conv-mode vicuna_v1" + FAST, tiny_path) == 0
    set_texts(answers, ["Nokia.", "samsung"])
    capsys.readouterr()
    assert official(f"python -m llava.eval.eval_textvqa --annotation-file {EVAL}/textvqa/TextVQA_0.5.1_val.json "
                    f"--result-file {answers}", tiny_path) == 0
    assert capsys.readouterr().out == "llava-v1.5-13b\nSamples: 2\nAccuracy: 50.00%\n\n"
    assert official(f"python -m llava.eval.eval_textvqa --annotation-file {EVAL}/textvqa/TextVQA_0.5.1_val.json "
                    f"--result-dir {EVAL}/textvqa/answers", tiny_path) == 0  # also holds the .run.json sidecar
    assert capsys.readouterr().out == ("llava-v1.5-13b\nSamples: 2\nAccuracy: 50.00%\n\n"
                                       "Skipping llava-v1.5-13b.jsonl.run.json\n")


def test_m4c_evaluators():
    from llava.eval.m4c_evaluator import EvalAIAnswerProcessor, STVQAAccuracyEvaluator, TextVQAAccuracyEvaluator

    entries = [{"pred_answer": "Nokia.", "gt_answers": ["nokia"] * 2 + ["sony"] * 8},
               {"pred_answer": "two", "gt_answers": ["2"] * 10}]
    # 2 matching annotators: left out -> 1/3 (twice), kept -> 2/3 (8 times); mean 0.6. Then 1.0.
    assert TextVQAAccuracyEvaluator().eval_pred_list(entries) == pytest.approx((0.6 + 1.0) / 2)
    assert STVQAAccuracyEvaluator().eval_pred_list(entries) == 1.0
    assert EvalAIAnswerProcessor()("The Two dogs!") == "2 dogs"


def test_model_vqa_llavabench_line(tiny_path, playground):
    answers = f"{EVAL}/gqa/answers/model_vqa.jsonl"
    assert official(f"python -m llava.eval.model_vqa --model-path liuhaotian/llava-v1.5-13b "
                    f"--question-file {EVAL}/gqa/llava_gqa_testdev_balanced.jsonl "
                    f"--image-folder {EVAL}/gqa/data/images --answers-file {answers} --temperature 0 "
                    "--conv-mode vicuna_v1" + FAST, tiny_path) == 0
    assert len(lines(answers)) == 3 and all(set(a) == KEYS for a in lines(answers))
    base = ["--model-path", "m", "--question-file", "q", "--image-folder", "i", "--answers-file", "a"]
    assert model_vqa_loader.build_parser(1024).parse_args(base).max_new_tokens == 1024  # model_vqa's default


def test_mmbench_and_xlsx_upload(tiny_path, playground):
    split = "mmbench_dev_20230712"
    rows = build_mmbench(playground, "mmbench", split)
    answers = f"{EVAL}/mmbench/answers/{split}/llava-v1.5-13b.jsonl"
    assert official(f"python -m llava.eval.model_vqa_mmbench --model-path liuhaotian/llava-v1.5-13b "
                    f"--question-file {EVAL}/mmbench/{split}.tsv --answers-file {answers} --single-pred-prompt "
                    "--temperature 0 --conv-mode vicuna_v1" + FAST, tiny_path) == 0
    got = lines(answers)
    assert set(got[0]) == KEYS | {"round_id", "options", "option_char"}
    assert (got[0]["question_id"], got[0]["round_id"], got[0]["option_char"]) == (0, 0, ["A", "B", "C"])
    assert got[0]["prompt"] == "A photo.\nWhat is shown?\nA. a cat\nB. a dog\nC. a car"
    set_texts(answers, ["A", "C"])
    assert official(f"python scripts/convert_mmbench_for_submission.py --annotation-file {EVAL}/mmbench/{split}.tsv "
                    f"--result-dir {EVAL}/mmbench/answers/{split} --upload-dir {EVAL}/mmbench/answers_upload/{split} "
                    "--experiment llava-v1.5-13b", tiny_path) == 0
    table = read_xlsx(playground / f"mmbench/answers_upload/{split}/llava-v1.5-13b.xlsx")
    assert table[0] == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert [r[0] for r in table[1:]] == [r["index"] for r in rows] and [r[6] for r in table[1:]] == ["A", "C"]


def test_mmbench_all_rounds_rotates_options(tiny_path, playground):
    build_mmbench(playground)
    answers = playground / "rounds.jsonl"
    assert model_vqa_mmbench.main(["--model-path", str(tiny_path), "--question-file",
                                   str(playground / "mmbench/mmbench_dev_20230712.tsv"), "--answers-file",
                                   str(answers), "--all-rounds", "--temperature", "0", "--num-chunks", "2",
                                   "--chunk-idx", "0", "--max_new_tokens", "2"]) == 0
    got = lines(answers)  # chunk 0 of 2 = the first TSV row, all three of its rounds
    assert [(a["question_id"], a["round_id"]) for a in got] == [(0, 0), (0, 1), (0, 2)]
    assert [a["option_char"] for a in got] == [["A", "B", "C"], ["B", "C", "A"], ["C", "A", "B"]]
    assert got[1]["options"] == ["a dog", "a car", "a cat"]
    assert got[1]["prompt"].endswith("\nA. a dog\nB. a car\nC. a cat")


def test_vizwiz_and_vqav2_converters(tiny_path, playground, capsys):
    answers = f"{EVAL}/vizwiz/answers/llava-v1.5-13b.jsonl"
    assert official(f"python -m llava.eval.model_vqa_loader --model-path liuhaotian/llava-v1.5-13b "
                    f"--question-file {EVAL}/vizwiz/llava_test.jsonl --image-folder {EVAL}/vizwiz/test "
                    f"--answers-file {answers} --temperature 0 --conv-mode vicuna_v1" + FAST, tiny_path) == 0
    set_texts(answers, ["Unanswerable.", "Two dogs"])
    upload = f"{EVAL}/vizwiz/answers_upload/llava-v1.5-13b.json"
    capsys.readouterr()
    assert official(f"python scripts/convert_vizwiz_for_submission.py --annotation-file {EVAL}/vizwiz/llava_test.jsonl "
                    f"--result-file {answers} --result-upload-file {upload}", tiny_path) == 0
    assert capsys.readouterr().out == "total results: 2, total split: 2, error_line: 0\n"
    images = [q["image"] for q in lines(playground / "vizwiz/llava_test.jsonl")]
    assert json.loads(Path(upload).read_text()) == [{"image": images[0], "answer": "unanswerable"},
                                                    {"image": images[1], "answer": "2 dogs"}]

    split, ckpt = "llava_vqav2_mscoco_test-dev2015", "llava-v1.5-13b"
    build_vqav2(playground)
    merged = playground / f"vqav2/answers/{split}/{ckpt}/merge.jsonl"
    assert official(f"python -m llava.eval.model_vqa_loader --model-path liuhaotian/llava-v1.5-13b "
                    f"--question-file {EVAL}/vqav2/{split}.jsonl --image-folder {EVAL}/vqav2/test2015 "
                    f"--answers-file {merged} --temperature 0 --conv-mode vicuna_v1" + FAST, tiny_path) == 0
    set_texts(merged, ["Red.", "three"])
    with merged.open("a") as f:
        f.write("{torn\n")
    capsys.readouterr()
    assert official(f"python scripts/convert_vqav2_for_submission.py --split {split} --ckpt {ckpt}", tiny_path) == 0
    assert capsys.readouterr().out == "total results: 2, total split: 3, error_line: 1\n"
    assert json.loads((playground / f"vqav2/answers_upload/{split}/{ckpt}.json").read_text()) == [
        {"question_id": 1000, "answer": "red"}, {"question_id": 2001, "answer": "3"},
        {"question_id": 3002, "answer": ""}]


def test_visiondrop_flags_alone_select_visiondrop(tiny_path, playground, capsys):
    answers = playground / "vd.jsonl"
    command = (f"python -m llava.eval.model_vqa_loader --model-path liuhaotian/llava-v1.5-13b "
               f"--question-file {EVAL}/pope/llava_pope_test.jsonl --image-folder {EVAL}/pope/val2014 "
               f"--answers-file {answers} --temperature 0 --conv-mode vicuna_v1 --max_new_tokens 2 "
               "--dominant 42 --contextual 6 --layer_list [8,16,24] --image_token_list [[30,5],[22,4],[16,3]]")
    assert official(command, tiny_path) == 0
    meta = lines(answers)[0]["metadata"]
    assert meta["visual_tokens_per_layer"] == [48] * 8 + [35] * 8 + [26] * 8 + [19] * 8
    assert json.loads(answers.with_name("vd.jsonl.run.json").read_text())["settings"]["pruning"]["method"] == \
        "visiondrop"
    fastv = str(REPO / "configs/fastv/llava15_64.yaml")
    assert official(command.replace("vd.jsonl", "other.jsonl") + f" --config {fastv}", tiny_path) == 2
    assert "are VisionDrop flags, but" in capsys.readouterr().err


def test_model_base_reaches_the_loader(tiny_path, playground, capsys):
    assert official(f"python -m llava.eval.model_vqa_loader --model-path liuhaotian/llava-v1.5-13b "
                    f"--model-base {playground / 'no-base'} --question-file {EVAL}/pope/llava_pope_test.jsonl "
                    f"--image-folder {EVAL}/pope/val2014 --answers-file a.jsonl", tiny_path) == 2
    assert f"model base {playground / 'no-base'} does not exist" in capsys.readouterr().err


def test_official_defaults():
    base = ["--model-path", "m", "--question-file", "q", "--answers-file", "a"]
    loader = model_vqa_loader.build_parser().parse_args([*base, "--image-folder", "i"])
    assert (loader.temperature, loader.conv_mode, loader.max_new_tokens) == (0.2, "llava_v1", 128)
    science = model_vqa_science.build_parser().parse_args([*base, "--image-folder", "i"])
    assert (science.conv_mode, science.single_pred_prompt, science.max_new_tokens) == ("llava_v0", False, 1024)
    mmbench = model_vqa_mmbench.build_parser().parse_args(base)
    assert (mmbench.single_pred_prompt, mmbench.all_rounds, mmbench.lang, mmbench.temperature) == \
        (False, False, "en", 0.2)
    one = run_llava.build_parser().parse_args(["--image-file", "x", "--query", "q"])
    assert (one.temperature, one.max_new_tokens, one.sep, one.conv_mode) == (0.2, 512, ",", None)
    assert [run_llava.conv_mode_for(n) for n in ("llava-v1.5-7b", "llava-v1.6-mistral-7b", "llava-v1.6-34b",
                                                 "llava-llama-2-13b-chat", "mpt-7b", "LLaVA-13b-delta-v0")] == \
        ["llava_v1", "mistral_instruct", "chatml_direct", "llava_llama_2", "mpt", "llava_v0"]
    assert get_model_name_from_path("/ckpts/llava-v1.5-7b/") == "llava-v1.5-7b"
    assert get_model_name_from_path("runs/llava-lora/checkpoint-500") == "llava-lora_checkpoint-500"


def test_science_default_template_llava_v0_runs(tiny_path, playground):
    answers = playground / "v0.jsonl"
    assert model_vqa_science.main(["--model-path", str(tiny_path), "--question-file",
                                   str(playground / "scienceqa/llava_test_CQM-A.json"), "--image-folder",
                                   str(playground / "scienceqa/images/test"), "--answers-file", str(answers),
                                   "--temperature", "0", "--max_new_tokens", "2", "--answer-prompter"]) == 0
    assert json.loads(answers.with_name("v0.jsonl.run.json").read_text())["settings"]["conv_mode"] == "llava_v0"
    assert [a["prompt"] for a in lines(answers)][0].endswith("B. apostrophe")  # no letter instruction by default


@contextlib.contextmanager
def http_folder(folder: Path):
    """Serve `folder` over HTTP on localhost; yields the base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_run_llava_several_images_url_and_eval_model(tiny_path, tmp_path, capsys):
    save_image(tmp_path / "a.png", "a")
    save_image(tmp_path / "b.png", "b")
    with http_folder(tmp_path) as url:
        assert run_llava.main(["--model-path", str(tiny_path), "--image-file", f"{tmp_path / 'a.png'};{url}/b.png",
                               "--sep", ";", "--query", "What differs?", "--max_new_tokens", "3",
                               "--temperature", "0", "--device", "cpu"]) == 0
        assert capsys.readouterr().out.endswith("\n")
        assert run_llava.main(["--model-path", str(tiny_path), "--image-file", f"{url}/absent.png", "--query", "q",
                               "--device", "cpu"]) == 2
        assert f"cannot load image URL {url}/absent.png" in capsys.readouterr().err
    two = f"{tmp_path / 'a.png'},{tmp_path / 'b.png'}"
    assert run_llava.main(["--model-path", str(tiny_path), "--image-file", two, "--device", "cpu",
                           "--query", "<image-placeholder> What?"]) == 2  # two images, one placeholder
    assert "2 images for 1 <image> placeholders" in capsys.readouterr().err
    args = type("Args", (), {"model_path": str(tiny_path), "model_base": None, "model_name": tiny_path.name,
                             "query": "What is it?", "conv_mode": None, "image_file": str(tmp_path / "a.png"),
                             "sep": ",", "temperature": 0, "top_p": None, "num_beams": 1, "max_new_tokens": 3})()
    text = run_llava.eval_model(args)
    assert capsys.readouterr().out == text + "\n"


def test_process_images_official_signature(load_tiny):
    from PIL import Image

    from llava.mm_utils import expand2square

    _, model = load_tiny()
    processor = model.get_vision_tower().image_processor  # what load_pretrained_model returns
    images = [Image.effect_mandelbrot((90, 60), (-2, -1.2, 1, 1.2), 50).convert("RGB"),
              Image.new("RGB", (30, 90), (0, 90, 10))]
    pixels = process_images(images, processor, model.config)
    background = tuple(int(x * 255) for x in processor.image_mean)
    expected = [processor.preprocess(expand2square(im, background), return_tensors="pt")["pixel_values"][0]
                for im in images]  # LLaVA's `pad` path through the processor itself
    assert pixels.shape == (2, 3, 336, 336)
    assert torch.equal(pixels, torch.stack(expected))


def test_no_cli_writes_over_its_input(tiny_path, playground, capsys):
    questions = playground / "pope/llava_pope_test.jsonl"
    before = questions.read_bytes()
    assert model_vqa_loader.main(["--model-path", str(tiny_path), "--question-file", str(questions),
                                  "--image-folder", ".", "--answers-file", str(questions)]) == 2
    assert "refusing to write over an input" in capsys.readouterr().err and questions.read_bytes() == before
    answers = playground / "a.jsonl"
    answers.write_text(json.dumps({"question_id": "4", "prompt": "p", "text": "A"}) + "\n")
    for command in (f"python llava/eval/eval_science_qa.py --base-dir {EVAL}/scienceqa --result-file {answers} "
                    f"--output-file {answers} --output-result r.json",
                    f"python scripts/convert_gqa_for_eval.py --src {answers} --dst {answers}",
                    f"python scripts/convert_vizwiz_for_submission.py --annotation-file {questions} "
                    f"--result-file {answers} --result-upload-file {questions}",
                    f"python -m llava.eval.scoring.scienceqa --answers {answers} --question-file "
                    f"{EVAL}/scienceqa/llava_test_CQM-A.json --output-json {answers}",
                    f"python -m llava.eval.record pending --answers {answers} --benchmark vqav2 "
                    f"--output-json {answers}",
                    f"python -m llava.eval.scoring.vizwiz --answers {answers} --question-file {questions} "
                    f"--upload-file {questions}"):
        assert official(command, tiny_path) == 1
        assert "refusing to write over an input" in capsys.readouterr().err
    answers.rename(playground / "1_0.jsonl")
    assert official(f"python -m llava.eval.merge_chunks --chunk-dir {playground} --num-chunks 1 "
                    f"--question-file {questions} --output {playground / '1_0.jsonl'}", tiny_path) == 2
    assert "refusing to write over an input" in capsys.readouterr().err
    assert questions.read_bytes() == before and len(lines(playground / "1_0.jsonl")) == 1
