"""The lmms-eval plugin (`llava.lmms`). The first part needs no lmms-eval (request batching on the drivers'
engine, log-likelihood math against a direct forward pass, multi-round, ranks, the sidecar); the second part
runs lmms-eval itself (its registry, its CLI on a local task, two data-parallel processes) and is skipped when
lmms-eval is not installed (`bash scripts/install_lmms_eval.sh` installs it)."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_close
from eval_data import stand_in_image

from llava.conversation import build_prompt
from llava.eval import model_vqa_loader
from llava.eval.generation import generate_batch, load_for_args, run_settings
from llava.eval.prompts import pixel_inputs
from llava.eval.questions import read_loader_questions
from llava.lmms.engine import (
    Query,
    cut_at_stops,
    generate,
    generate_multi_round,
    generation_args,
    loglikelihood,
    make_query,
    plan_batches,
)
from llava.lmms.options import device_for_process, engine_args, process_position, run_label
from llava.lmms.record import VisualTokenRecord, record_path
from llava.mm_utils import load_image, tokenizer_image_token

REPO = Path(__file__).resolve().parents[1]
TASK_DIR = REPO / "tests" / "lmms_task"
VD64 = str(REPO / "configs/visiondrop/llava15_64.yaml")
SUFFIX = "\nAnswer the question using a single word or phrase."
QUESTIONS = ["What color is the bus?", "Is there a dog in the picture?", "How many people are standing?",
             "What is on the table next to the window?", "Which animal is it?"]
HAS_LMMS = importlib.util.find_spec("lmms_eval") is not None


def write_task(folder: Path) -> Path:
    """The shipped local tasks plus their data (questions.jsonl, images/) in `folder`; returns the file."""
    shutil.copytree(TASK_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "images").mkdir()
    rows = []
    for i, question in enumerate(QUESTIONS):
        name = f"img{i}.png"
        stand_in_image(name, size=(64 + 16 * i, 48)).save(folder / "images" / name)
        rows.append({"question_id": i, "image": name, "text": question + SUFFIX, "answer": "yes",
                     "choices": ["yes", "no", "two"]})
    path = folder / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def engine(tiny_path):
    """(base args, tokenizer, model, image size) of the tiny model with VisionDrop at 64 tokens."""
    args = engine_args(str(tiny_path), VD64, None, "cpu", "float32", "sdpa", None, "vicuna_v1", False)
    config, _ = run_settings(args)
    tok, model, image_processor = load_for_args(args, config)
    return args, tok, model, image_processor


# ---------------------------------------------------------------- without lmms-eval


def test_plan_batches_groups_by_settings_longest_first():
    keys = ["a", "b", "a", "a", "b", "a"]
    lengths = [5, 9, 7, 1, 3, 7]
    assert plan_batches(keys, lengths, 2) == [[2, 5], [0, 3], [1, 4]]
    assert plan_batches(keys, lengths, 10) == [[2, 5, 0, 3], [1, 4]]
    assert sorted(i for b in plan_batches(keys, lengths, 1) for i in b) == list(range(6))
    with pytest.raises(ValueError, match="batch_size=0"):
        plan_batches(keys, lengths, 0)


def test_generation_kwargs_and_stop_strings(engine):
    base = engine[0]
    args, until = generation_args(base, {"max_new_tokens": 16, "temperature": 0, "top_p": 1.0, "num_beams": 1,
                                         "do_sample": False, "until": "\n\n"})
    assert (args.max_new_tokens, args.temperature, args.top_p, until) == (16, 0.0, 1.0, ["\n\n"])
    assert base.max_new_tokens == 128  # the base settings are not changed
    assert generation_args(base, {})[0].max_new_tokens == 128
    with pytest.raises(ValueError, match="num_beams=3"):
        generation_args(base, {"num_beams": 3})
    with pytest.raises(ValueError, match="repetition_penalty"):
        generation_args(base, {"repetition_penalty": 1.1})
    assert cut_at_stops("yes\n\nbecause", ["\n\n", ""]) == "yes"
    assert cut_at_stops("yes", []) == "yes"


def test_make_query_places_the_image_like_the_llava_drivers():
    image = stand_in_image("q").convert("L")
    query = make_query("What is it?", [image])
    assert query.text == "<image>\nWhat is it?" and query.image.mode == "RGB"
    assert make_query("<image>\nWhat is it?", image).text == "<image>\nWhat is it?"
    assert make_query("Text only?", []) == Query("Text only?")
    with pytest.raises(ValueError, match="2 images in one request"):
        make_query("Two?", [image, image], "vqa doc 3")
    with pytest.raises(ValueError, match="placeholder but no image"):
        make_query("<image>\nWhere?", None)


def test_generate_batch3_equals_batch1_and_the_loader_driver(engine, tmp_path):
    args, tok, model, image_processor = engine
    path = write_task(tmp_path / "task")
    items = read_loader_questions(path, tmp_path / "task" / "images")
    queries = [make_query(item.prompt, [load_image(item.image_file)]) for item in items]
    gen_kwargs = [{"max_new_tokens": 3}, {"max_new_tokens": 4}, {"max_new_tokens": 3}, {"max_new_tokens": 3},
                  {"max_new_tokens": 4}]
    seen = []
    batched = generate(queries, gen_kwargs, args, tok, model, image_processor, 3, lambda idx, out: seen.append(idx))
    single = generate(queries, gen_kwargs, args, tok, model, image_processor, 1)
    assert batched == single
    assert sorted(len(b) for b in seen) == [2, 3]  # the 3 requests of 3 tokens together, the 2 of 4 together
    for _, per_layer in batched:
        assert len(per_layer) == 32 and sum(per_layer) / 32 == 64.0
    for n in (3, 4):  # the drivers' own path (question file -> EvalItem -> generate_batch) gives the same answers
        driver_args = generation_args(args, {"max_new_tokens": n})[0]
        chosen = [i for i, g in enumerate(gen_kwargs) if g["max_new_tokens"] == n]
        driver = generate_batch([items[i] for i in chosen], tok, model, image_processor, driver_args)
        assert [batched[i] for i in chosen] == driver


@pytest.mark.parametrize("config", [None, VD64])
def test_loglikelihood_equals_a_direct_forward(load_tiny, tiny_path, config):
    tok, model = load_tiny(config)
    image_processor = model.get_vision_tower().image_processor
    image = stand_in_image("ll", size=(80, 60))
    question = "<image>\nWhat is shown?" + SUFFIX
    for continuation in ("yes", "a red bus"):
        logprob, greedy, per_layer = loglikelihood(Query(question, image), continuation, tok, model, image_processor,
                                                   "vicuna_v1")
        # direct: the vicuna_v1 prompt closed by the reply and `</s>`, scored with one forward pass
        context = tokenizer_image_token(build_prompt(question), tok, return_tensors="pt")
        full = tokenizer_image_token(build_prompt(question) + f" {continuation}</s>", tok, return_tensors="pt")
        n = len(full) - len(context)
        pixels, sizes = pixel_inputs([image], model, image_processor)
        logits = model(full[None], images=pixels, image_sizes=sizes)[0].float()
        scores = logits.log_softmax(-1)[-n - 1:-1]
        expected = scores[torch.arange(n), full[-n:]].sum()
        assert_close(logprob, expected, atol=1e-4, rtol=1e-5)
        assert greedy == bool((scores.argmax(-1) == full[-n:]).all())
        assert sum(per_layer) / len(per_layer) == (64.0 if config else 576.0)
        # the first reply token's score equals the prefill logits of generation (KV-cache path)
        _, step_logits = model.generate(context[None], images=pixels, image_sizes=sizes, max_new_tokens=1,
                                        return_logits=True)
        assert_close(scores[0], step_logits[0, 0].log_softmax(-1), atol=1e-4, rtol=1e-4)
    assert loglikelihood(Query(question, image), "", tok, model, image_processor, "vicuna_v1")[:2] == (0.0, True)


def test_multi_round_runs_rounds_until_each_request_stops(engine):
    args, tok, model, image_processor = engine
    image = stand_in_image("mr")
    rounds = {0: 2, 1: 3}  # request -> rounds before `terminal`
    calls = []

    def next_round(request):
        def step(previous, round_idx, info):
            calls.append((request, round_idx, list(previous), info))
            if round_idx == rounds[request]:
                return None, None, True, previous, None
            return [image], f"Round {round_idx}: you said {previous[-1]!r}. Again?", False, previous, round_idx

        return step

    def run(live, queries, gen_kwargs):
        out = generate(queries, gen_kwargs, args, tok, model, image_processor, 2)
        return [text for text, _ in out]

    first = [make_query("First question?", [image]), make_query("Another first question?", [image])]
    answers = generate_multi_round(first, [{"max_new_tokens": 2}] * 2, [next_round(0), next_round(1)], run)
    assert [len(a) for a in answers] == [2, 3]
    assert [(r, i) for r, i, _, _ in calls] == [(0, 1), (1, 1), (0, 2), (1, 2), (1, 3)]
    assert calls[2][2] == answers[0] and calls[2][3] == 1  # the answers so far and the round info are passed on
    # each round's answer is the single-round answer to that round's prompt
    prompt = f"Round 1: you said {answers[1][0]!r}. Again?"
    assert answers[1][1] == run([0], [make_query(prompt, [image])], [{"max_new_tokens": 2}])[0]


def test_process_position_and_device():
    env = {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8"}
    assert process_position(None, env) == (5, 1, 8)
    assert process_position(None, {}) == (0, 0, 1)
    assert device_for_process("cpu", 1, 8) == "cpu"
    assert device_for_process("cuda:0", 0, 1) == "cuda:0"
    expected = "cuda:1" if torch.cuda.is_available() else "cpu"
    assert device_for_process("auto", 1, 8) == expected and device_for_process("cuda:0", 1, 8) == expected


def test_model_args_parse_with_the_drivers_parser(tiny_path):
    args = engine_args(str(tiny_path), VD64, "encoder.dominant=72; encoder.contextual=24", "cpu", "auto", "sdpa",
                       None, "vicuna_v1", True)
    assert args.set == ["encoder.dominant=72", "encoder.contextual=24"] and args.cuda_graph_decode
    config, settings = run_settings(args)
    assert (config.options.encoder.dominant, config.options.encoder.contextual) == (72, 24)
    assert settings["pruning"]["method"] == "visiondrop"
    with pytest.raises(ValueError, match="visiondrop_llava model_args: argument --dtype"):
        engine_args(str(tiny_path), None, None, "cpu", "float8", "sdpa", None, "vicuna_v1", False)
    assert run_label("visiondrop", VD64, []) == "visiondrop_llava15_64"
    assert run_label("none", "", []) == "none"
    assert run_label("visiondrop", VD64, ["encoder.dominant=48"]).startswith("visiondrop_llava15_64+")


def test_visual_token_record(tmp_path):
    path = record_path(str(tmp_path / "{model}" / "{config}.rank{rank}.json"), "tiny", "visiondrop_llava15_64", 1)
    assert path == tmp_path / "tiny" / "visiondrop_llava15_64.rank1.json"
    with pytest.raises(ValueError, match=r"record='x\{run\}.json'"):
        record_path("x{run}.json", "tiny", "none", 0)
    record = VisualTokenRecord(path, {"method": "visiondrop"})
    record.add("gqa", "generate_until", [96, 70])
    record.add("gqa", "generate_until", [96, 50])
    record.add("mmbench", "loglikelihood", [0, 0])
    record.write()
    data = json.loads(path.read_text())
    assert data["method"] == "visiondrop"
    assert data["tasks"]["gqa"] == {"requests": 2, "request_types": {"generate_until": 2},
                                    "visual_tokens_per_layer": [96.0, 60.0], "visual_tokens_mean": 78.0}
    assert data["tasks"]["mmbench"]["visual_tokens_mean"] == 0.0


# ---------------------------------------------------------------- with lmms-eval

needs_lmms = pytest.mark.skipif(not HAS_LMMS, reason="lmms-eval not installed (bash scripts/install_lmms_eval.sh)")


@needs_lmms
def test_lmms_eval_registry_finds_the_plugin_by_entry_point():
    from lmms_eval.models import MODEL_REGISTRY_V2, get_model

    from llava.lmms.model import VisionDropLlava

    manifest = MODEL_REGISTRY_V2.get_manifest("visiondrop_llava")  # loaded from the `lmms_eval.models` group
    assert manifest.simple_class_path == "llava.lmms.model.VisionDropLlava"
    assert get_model("visiondrop_llava") is VisionDropLlava


@needs_lmms
def test_a_config_that_cannot_apply_fails_before_any_request(tiny_path):
    from lmms_eval.models import get_model

    cls = get_model("visiondrop_llava")
    with pytest.raises(ValueError, match=r"after layer 40 but the model has 32 layers"):
        cls.create_from_arg_string(f"pretrained={tiny_path},config={VD64},set=llm.layers=[8,16,40]",
                                   {"device": "cpu"})
    with pytest.raises(ValueError, match=r"config=.*missing\.yaml"):
        cls.create_from_arg_string(f"pretrained={tiny_path},config=missing.yaml", {"device": "cpu"})
    with pytest.raises(ValueError, match=r"unknown model_args \['temperature'\]"):
        cls.create_from_arg_string(f"pretrained={tiny_path},temperature=0", {"device": "cpu"})


@needs_lmms
def test_a_qwen_checkpoint_is_refused_before_any_request(tmp_path):
    from lmms_eval.models import get_model

    from llava.model.tiny_qwen import tiny_qwen_path

    path = tiny_qwen_path(tmp_path)
    with pytest.raises(ValueError, match=r"runs LLaVA-family checkpoints; qwen2\.5-vl-7b is not wired yet"):
        get_model("visiondrop_llava").create_from_arg_string(f"pretrained={path}", {"device": "cpu"})


@needs_lmms
def test_plugin_methods_on_lmms_eval_instances(tiny_path, tmp_path, engine):
    """generate_until, loglikelihood and generate_until_multi_round of the model class on hand-made Instances
    give the engine's answers and fill the sidecar."""
    from lmms_eval.api.instance import Instance
    from lmms_eval.models import get_model

    lm = get_model("visiondrop_llava").create_from_arg_string(
        f"pretrained={tiny_path},config={VD64},record={tmp_path}/rec.json", {"device": "cpu", "batch_size": "2"})
    docs = [{"q": q, "image": stand_in_image(f"doc{i}")} for i, q in enumerate(QUESTIONS[:3])]
    lm.task_dict = {"t": {"test": docs}}

    def to_visual(doc):
        return [doc["image"]]

    def to_text(doc, previous_output=None, round_idx=None, previous_round_info=None):
        if round_idx == 2:
            return None, None, True, previous_output, None
        return [doc["image"]], f"{doc['q']} (you said {previous_output[-1]})", False, previous_output, None

    def meta(i):
        return {"task": "t", "doc_id": i, "repeats": 1}

    kwargs = {"max_new_tokens": 3, "until": ["\n\n"]}
    gen = [Instance("generate_until", (d["q"], dict(kwargs), to_visual, i, "t", "test"), 0, meta(i))
           for i, d in enumerate(docs)]
    texts = lm.generate_until(gen)
    args, tok, model, image_processor = engine
    queries = [make_query(d["q"], [d["image"]]) for d in docs]
    assert texts == [t for t, _ in generate(queries, [kwargs] * 3, args, tok, model, image_processor, 1)]
    ll = lm.loglikelihood([Instance("loglikelihood", (docs[0]["q"], "yes", to_visual, 0, "t", "test"), 0, meta(0))])
    assert ll[0].text == loglikelihood(queries[0], "yes", tok, model, image_processor, "vicuna_v1")[:2]
    multi = lm.generate_until_multi_round(
        [Instance("generate_until_multi_round", (d["q"], dict(kwargs), to_visual, to_text, i, "t", "test"), 0,
                  meta(i)) for i, d in enumerate(docs)])
    assert [len(m) for m in multi] == [2, 2, 2] and [m[0] for m in multi] == texts
    record = json.loads((tmp_path / "rec.json").read_text())["tasks"]["t"]
    assert record["request_types"] == {"generate_until": 3, "loglikelihood": 1, "generate_until_multi_round": 6}
    assert record["visual_tokens_mean"] == 64.0


def lmms_eval_cmd(tiny_path: Path, out: Path, record: str, *launcher: str) -> list[str]:
    """lmms-eval's CLI on the two local tasks (4 of 5 questions), VisionDrop at 64 tokens, batch 3."""
    return [*(launcher or [sys.executable]), "-m", "lmms_eval", "--model", "visiondrop_llava",
            "--model_args", f"pretrained={tiny_path},config={VD64},record={record}",
            "--tasks", "vd_tiny_vqa,vd_tiny_mc", "--include_path", ".", "--limit", "4", "--batch_size", "3",
            "--device", "cpu", "--output_path", str(out), "--log_samples"]


def offline_env() -> dict:
    """Environment for lmms-eval subprocesses: no hub access, one thread, no inherited device selection."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return env


def samples(out: Path, task: str) -> list[dict]:
    """lmms-eval's logged samples of a task, by doc id."""
    (path,) = glob.glob(str(out / "*" / f"*_samples_{task}.jsonl"))
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return sorted(rows, key=lambda r: r["doc_id"])


@pytest.fixture(scope="module")
def cli_run(tiny_path, tmp_path_factory):
    """One single-process lmms-eval CLI run in a task folder: (folder, output path)."""
    folder = tmp_path_factory.mktemp("lmms") / "task"
    write_task(folder)
    out = folder / "out"
    proc = subprocess.run(lmms_eval_cmd(tiny_path, out, "record.json"), cwd=folder, env=offline_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and "vd_tiny_vqa" in proc.stdout, (proc.stdout + proc.stderr)[-4000:]
    return folder, out


@needs_lmms
def test_lmms_eval_cli_end_to_end_equals_the_loader_driver(cli_run, tiny_path):
    folder, out = cli_run
    answers = folder / "loader.jsonl"
    assert model_vqa_loader.main(["--model-path", str(tiny_path), "--question-file", str(folder / "questions.jsonl"),
                                  "--image-folder", str(folder / "images"), "--answers-file", str(answers),
                                  "--config", VD64, "--max-new-tokens", "4", "--device", "cpu",
                                  "--temperature", "0", "--conv-mode", "vicuna_v1"]) == 0
    loader = [json.loads(line)["text"] for line in answers.read_text().splitlines()]
    vqa = samples(out, "vd_tiny_vqa")
    assert [r["doc_id"] for r in vqa] == [0, 1, 2, 3]  # --limit 4
    assert [r["filtered_resps"] for r in vqa] == loader[:4]
    mc = samples(out, "vd_tiny_mc")
    assert all(len(r["filtered_resps"]) == 3 for r in mc)  # one log-likelihood per choice
    (results,) = glob.glob(str(out / "*" / "*_results.json"))
    config = json.loads(Path(results).read_text())["config"]
    assert config["model_backend"].startswith("llava.lmms.model.VisionDropLlava")
    assert f"config={VD64}" in config["model_args"]
    record = json.loads((folder / "record.json").read_text())
    assert record["method"] == "visiondrop" and record["config"]["budget"] == 64
    assert record["config_file"] == VD64 and record["batch_size"] == 3 and record["world_size"] == 1
    assert record["tasks"]["vd_tiny_vqa"]["requests"] == 4
    assert record["tasks"]["vd_tiny_mc"]["request_types"] == {"loglikelihood": 12}
    for task in ("vd_tiny_vqa", "vd_tiny_mc"):
        per_layer = record["tasks"][task]["visual_tokens_per_layer"]
        assert len(per_layer) == 32 and per_layer[0] == 96.0 and record["tasks"][task]["visual_tokens_mean"] == 64.0


@needs_lmms
def test_two_data_parallel_processes_split_the_documents(cli_run, tiny_path):
    """Two CPU processes under torchrun (what `accelerate launch --cpu --num_processes 2` starts; accelerate's own
    CLI imports timm, which needs torchvision): same answers as one process, documents split between ranks."""
    folder, single = cli_run
    out = folder / "out_dp"
    env = {**offline_env(), "ACCELERATE_USE_CPU": "true"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29631"]
    proc = subprocess.run(lmms_eval_cmd(tiny_path, out, "dp.rank{rank}.json", *launcher), cwd=folder, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    for task in ("vd_tiny_vqa", "vd_tiny_mc"):
        assert [r["filtered_resps"] for r in samples(out, task)] == [r["filtered_resps"] for r in samples(single, task)]
    ranks = [json.loads((folder / f"dp.rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    assert [r["tasks"]["vd_tiny_vqa"]["requests"] for r in ranks] == [2, 2]
