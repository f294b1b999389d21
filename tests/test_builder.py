"""load_pretrained_model on checkpoints laid out as the original releases: what it returns and what it accepts."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_DTYPE, assert_close, encode_prompt, stand_in_image
from PIL import Image

from llava.mm_utils import clip_preprocess
from llava.model.builder import load_pretrained_model
from llava.model.checkpoint import CheckpointError, read_state_dict

REPO = Path(__file__).resolve().parents[1]
STRAY_KEY = "model.layers.0.mlp.extra_proj.weight"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def loaded(tiny_path):
    return load_pretrained_model(str(tiny_path), None, "llava-v1.5-tiny", dtype=TEST_DTYPE)


def answer(tokenizer, model) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy tokens and their logits for one prompt and image."""
    ids = encode_prompt(tokenizer, "What is in the image?")
    return model.generate(ids[None], images=stand_in_image(3), max_new_tokens=4, return_logits=True)


def copy_config_and_tokenizer(src: Path, dst: Path, config: dict | None = None) -> None:
    dst.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copy2(src / name, dst / name)
    fields = config if config is not None else json.loads((src / "config.json").read_text())
    if "mm_vision_tower" in fields:  # the tiny tower lies next to the tiny checkpoint
        fields["mm_vision_tower"] = str((src / fields["mm_vision_tower"]).resolve())
    (dst / "config.json").write_text(json.dumps(fields))


def write_bin_shards(state: dict[str, torch.Tensor], out: Path) -> None:
    """Two pytorch_model-*.bin shards and their index, as the original 7B releases."""
    names = sorted(state)
    weight_map = {}
    for i, keys in enumerate((names[::2], names[1::2])):
        fname = f"pytorch_model-0000{i + 1}-of-00002.bin"
        torch.save({k: state[k] for k in keys}, out / fname)
        weight_map.update(dict.fromkeys(keys, fname))
    (out / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))


def inv_freq_buffers(n_layers: int) -> dict[str, torch.Tensor]:
    """The rotary buffers that LLaMA / Vicuna checkpoints of the transformers 4.3x era store in every layer."""
    inv_freq = 1.0 / 10000 ** (torch.arange(0, 16, 2).float() / 16)
    return {f"model.layers.{i}.self_attn.rotary_emb.inv_freq": inv_freq.clone() for i in range(n_layers)}


@pytest.fixture(scope="module")
def base_llm(tiny_path, tmp_path_factory) -> Path:
    """The tiny checkpoint's LLM alone, as a plain LLaMA checkpoint (Vicuna's layout, inv_freq included)."""
    out = tmp_path_factory.mktemp("vicuna-tiny") / "vicuna"
    fields = json.loads((tiny_path / "config.json").read_text())
    llama = {k: v for k, v in fields.items() if not k.startswith(("mm_", "image_", "tokenizer_"))}
    copy_config_and_tokenizer(tiny_path, out, {**llama, "model_type": "llama",
                                               "architectures": ["LlamaForCausalLM"]})
    state = {k: v for k, v in read_state_dict(tiny_path).items() if not k.startswith("model.mm_projector.")}
    write_bin_shards({**state, **inv_freq_buffers(fields["num_hidden_layers"])}, out)
    return out


def test_returns_the_official_tuple_with_a_clip_image_processor(loaded):
    tokenizer, model, image_processor, context_len = loaded
    assert context_len == 2048  # LLaVA's value where config.json has no max_sequence_length
    assert model.get_vision_tower().image_processor is image_processor
    assert image_processor.crop_size["height"] == model.get_vision_tower().config.image_size
    image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (300, 500, 3), dtype=np.uint8))
    pixels = image_processor.preprocess(image, return_tensors="pt")["pixel_values"]
    assert torch.equal(pixels, clip_preprocess(image, 336))


def test_image_processor_comes_from_the_towers_preprocessor_config(tiny_path, tmp_path):
    clip = tmp_path / "clip"
    shutil.copytree(tiny_path.parent / "tiny-clip-vit-336", clip)
    # openai/clip-vit-large-patch14-336's file (4.x integer sizes), with another mean to see that it is read
    (clip / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": 336, "do_center_crop": True, "do_normalize": True, "do_resize": True, "resample": 3,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.26862954, 0.26130258, 0.27577711], "size": 336}))
    _, _, image_processor, _ = load_pretrained_model(str(tiny_path), dtype=TEST_DTYPE, vision_tower=str(clip))
    assert list(image_processor.image_mean) == [0.5, 0.5, 0.5] and image_processor.crop_size["height"] == 336


def test_loading_and_cached_generation_warn_nothing(tiny_path, capfd):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. transformers' FutureWarning for a renamed keyword
        tokenizer, model, _, _ = load_pretrained_model(str(tiny_path), dtype=TEST_DTYPE)
        answer(tokenizer, model)
    err = capfd.readouterr().err
    assert "[transformers]" not in err and "deprecated" not in err, err


def test_rotary_buffers_in_bin_shards_are_ignored_and_the_model_answers(tiny_path, tmp_path, loaded, caplog):
    ckpt = tmp_path / "llava-v1.5-4.x-era"
    copy_config_and_tokenizer(tiny_path, ckpt)
    state = read_state_dict(tiny_path)
    write_bin_shards({**state, **inv_freq_buffers(32)}, ckpt)
    with caplog.at_level(logging.INFO, logger="llava"):
        tokenizer, model, _, _ = load_pretrained_model(str(ckpt), dtype=TEST_DTYPE)
    notes = [r.getMessage() for r in caplog.records if r.name.startswith("llava")]
    assert len(notes) == 1 and "ignored 32 stored non-weight buffers" in notes[0]
    tokens, logits = answer(tokenizer, model)
    expected_tokens, expected_logits = answer(loaded[0], loaded[1])
    assert torch.equal(tokens, expected_tokens)
    assert_close(logits, expected_logits, atol=1e-5, rtol=0)


def stray_checkpoint(tiny_path: Path, out: Path) -> Path:
    """The tiny checkpoint in .bin shards with one weight the model does not have."""
    copy_config_and_tokenizer(tiny_path, out)
    write_bin_shards({**read_state_dict(tiny_path), STRAY_KEY: torch.zeros(2, 2)}, out)
    return out


def test_stray_or_missing_weights_are_refused_naming_key_and_file(tiny_path, tmp_path):
    ckpt = stray_checkpoint(tiny_path, tmp_path / "llava-stray")
    shard = json.loads((ckpt / "pytorch_model.bin.index.json").read_text())["weight_map"][STRAY_KEY]
    with pytest.raises(CheckpointError, match=rf"unexpected {STRAY_KEY} \(in \S*{shard}"):
        load_pretrained_model(str(ckpt), dtype=TEST_DTYPE)
    shutil.rmtree(ckpt)
    copy_config_and_tokenizer(tiny_path, ckpt)
    write_bin_shards({k: v for k, v in read_state_dict(tiny_path).items() if k != "model.norm.weight"}, ckpt)
    with pytest.raises(CheckpointError, match=r"missing \['model\.norm\.weight'\] \(not in \S*llava-stray\)"):
        load_pretrained_model(str(ckpt), dtype=TEST_DTYPE)


@pytest.mark.parametrize("chunks", [1, 2])
def test_benchmark_scripts_do_not_advise_resuming_a_refused_checkpoint(tiny_path, tmp_path, chunks):
    ckpt = stray_checkpoint(tiny_path, tmp_path / "llava-stray")
    Image.new("RGB", (32, 24)).save(tmp_path / "a.png")
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question_id": f"q{i}", "image": "a.png", "text": "What?"}) + "\n"
                                 for i in range(2)))
    script = ('source scripts/eval/common.sh; eval_setup; generate llava.eval.model_vqa_loader "$T/a.jsonl" "" '
              '"$T/q.jsonl" --image-folder "$T"')
    env = {**os.environ, "MODEL_PATH": str(ckpt), "DEVICE": "cpu", "CHUNKS": str(chunks), "T": str(tmp_path),
           "PYTHON": sys.executable, "RESULTS_ROOT": str(tmp_path / "results")}
    proc = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert STRAY_KEY in proc.stderr and "refused its input" in proc.stderr, proc.stderr
    assert "resume" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_projector_only_checkpoint_loads_over_the_base_llm(tiny_path, tmp_path, base_llm, loaded):
    ckpt = tmp_path / "llava-v1.5-tiny-pretrain"
    copy_config_and_tokenizer(tiny_path, ckpt)
    projector = {k: v for k, v in read_state_dict(tiny_path).items() if k.startswith("model.mm_projector.")}
    torch.save(projector, ckpt / "mm_projector.bin")
    with pytest.raises(FileNotFoundError, match="--model-base"):
        load_pretrained_model(str(ckpt), dtype=TEST_DTYPE)
    _, model, _, _ = load_pretrained_model(str(ckpt), str(base_llm), "llava-v1.5-tiny-pretrain", dtype=TEST_DTYPE)
    expected = loaded[1].state_dict()
    assert list(model.state_dict()) == list(expected)
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


def test_lora_checkpoint_through_model_base_equals_the_merged_model(tiny_path, tmp_path, base_llm):
    peft = pytest.importorskip("peft")
    tokenizer, trained, _, _ = load_pretrained_model(str(tiny_path), dtype=torch.float32)
    tower, trained.model.vision_tower = trained.model.vision_tower, None  # LLaVA trains LoRA tower-less
    torch.manual_seed(0)
    trained = peft.get_peft_model(trained, peft.LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS))
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
            if "mm_projector" in name:  # the projector is trained too and saved next to the adapter
                p.add_(torch.randn_like(p) * 0.1)
    ckpt = tmp_path / "llava-v1.5-tiny-lora"
    copy_config_and_tokenizer(tiny_path, ckpt)
    trained.save_pretrained(str(ckpt))
    torch.save({f"base_model.model.{k}": v for k, v in trained.base_model.model.state_dict().items()
                if "mm_projector" in k}, ckpt / "non_lora_trainables.bin")
    trained.base_model.model.model.vision_tower = tower
    expected = answer(tokenizer, trained.base_model.model)  # LoRA applied on the fly, not merged

    _, model, _, _ = load_pretrained_model(str(ckpt), str(base_llm), "llava-v1.5-tiny-lora", dtype=torch.float32)
    assert not any("lora" in k for k in model.state_dict())
    tokens, logits = answer(tokenizer, model)
    assert torch.equal(tokens, expected[0])
    assert_close(logits, expected[1], atol=1e-4, rtol=0)
    merged = trained.merge_and_unload().state_dict()
    assert all(torch.allclose(v, merged[k], atol=1e-6) for k, v in model.state_dict().items())
