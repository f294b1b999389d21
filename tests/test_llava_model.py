"""The llava/ foundation on a tiny random checkpoint in the original LLaVA-1.5 layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import (
    TEST_DTYPE,
    assert_close,
    encode_prompt,
    right_pad,
    stand_in_image,
)
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.builder import load_pretrained_model, read_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base(load_tiny):
    return load_tiny()


def test_checkpoint_layout_and_clean_load(tiny_path, base):
    keys = set(load_file(str(tiny_path / "model.safetensors")))
    assert "model.mm_projector.0.weight" in keys and "model.mm_projector.2.bias" in keys
    assert "model.layers.31.self_attn.q_proj.weight" in keys and "lm_head.weight" in keys
    assert not any(k.startswith("model.vision_tower") for k in keys)  # LLaVA-1.5: tower outside the checkpoint
    config = json.loads((tiny_path / "config.json").read_text())
    assert config["model_type"] == "llava" and config["mm_vision_tower"]
    assert type(read_config(tiny_path)).__name__ == "LlavaConfig"  # not transformers' own Llava config
    _, model = base
    assert len(model.model.layers) == 32 and model.get_vision_tower().num_patches == 576


def test_load_reports_bad_checkpoints(tiny_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained_model(str(tmp_path / "nowhere"))
    broken = tmp_path / "llava-broken"
    shutil.copytree(tiny_path, broken)
    state = load_file(str(broken / "model.safetensors"))
    state["model.extra.weight"] = torch.zeros(1)
    from safetensors.torch import save_file

    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(ValueError, match="unexpected.*model.extra.weight"):
        load_pretrained_model(str(broken), dtype=torch.float32)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt"):
        load_pretrained_model(str(broken), dtype=torch.float32)
    no_tower = tmp_path / "llava-no-tower"
    shutil.copytree(tiny_path, no_tower)
    cfg = json.loads((no_tower / "config.json").read_text())
    cfg["mm_vision_tower"] = str(tmp_path / "missing-clip")
    (no_tower / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FileNotFoundError, match="missing-clip.*--vision-tower"):
        load_pretrained_model(str(no_tower), dtype=torch.float32)


def test_sharded_bin_checkpoint_loads_identically(tiny_path, tmp_path, base):
    sharded = tmp_path / "llava-sharded"
    shutil.copytree(tiny_path, sharded)
    state = load_file(str(sharded / "model.safetensors"))
    (sharded / "model.safetensors").unlink()
    names = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    weight_map = {}
    for fname, keys in halves.items():
        torch.save({k: state[k] for k in keys}, sharded / fname)
        weight_map.update({k: fname for k in keys})
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    clip = str(tiny_path.parent / "tiny-clip-vit-336")
    _, model, _, _ = load_pretrained_model(str(sharded), dtype=TEST_DTYPE, vision_tower=clip)
    for (name, a), b in zip(model.state_dict().items(), base[1].state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu()), name


def test_logits_match_transformers_llama_on_spliced_embeddings(base, gqa_questions):
    tok, model = base
    ids = encode_prompt(tok, gqa_questions[0]["text"])
    ours = model(ids[None], images=stand_in_image(0))
    batch = model.prepare_multimodal_batch(ids[None], images=stand_in_image(0))
    reference = LlamaForCausalLM(model.config).eval()
    reference.load_state_dict({k: v for k, v in model.state_dict().items()
                               if not k.startswith(("model.mm_projector", "model.vision_tower"))}, strict=True)
    with torch.no_grad():
        theirs = reference(inputs_embeds=batch.hidden, attention_mask=batch.key_mask.long()).logits
    assert ours.shape == theirs.shape
    assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_image_features_land_at_the_placeholder(base, where):
    tok, model = base
    text = {"start": "<image>\nWhat is this?", "middle": "Look at<image>\nwhat is this?",
            "end": "What is this?\n<image>"}[where]
    ids = encode_prompt(tok, text)
    batch = model.prepare_multimodal_batch(ids[None], images=stand_in_image(1))
    features, _ = model.encode_images(stand_in_image(1))
    at = int((ids == IMAGE_TOKEN_INDEX).nonzero())
    assert int(batch.visual_start[0]) == at and int(batch.visual_len[0]) == 576
    assert batch.hidden.shape[1] == len(ids) - 1 + 576
    assert_close(batch.hidden[0, at: at + 576], features[0], atol=0, rtol=0)
    text_ids = torch.cat([ids[:at], ids[at + 1:]])
    spliced_text = torch.cat([batch.hidden[0, :at], batch.hidden[0, at + 576:]])
    assert_close(spliced_text, model.model.embed_tokens(text_ids.to(model.device)), atol=0, rtol=0)


def test_placeholder_and_image_count_must_agree(base):
    tok, model = base
    ids = encode_prompt(tok, "<image>\nWhat?")
    with pytest.raises(ValueError, match="no images"):
        model(ids[None])
    with pytest.raises(ValueError, match="2 images for 1"):
        model(ids[None], images=torch.cat([stand_in_image(0), stand_in_image(1)]))


def test_run_llava_cli(tiny_path, tmp_path, capsys):
    from PIL import Image

    from llava.eval.run_llava import main

    assert main(["--model-path", str(tiny_path), "--image-file", str(tmp_path / "nope.jpg"), "--query", "What?"]) == 2
    assert "nope.jpg" in capsys.readouterr().err
    Image.new("RGB", (400, 300), (200, 30, 30)).save(tmp_path / "red.jpg")
    assert main(["--model-path", str(tiny_path), "--image-file", str(tmp_path / "red.jpg"), "--query", "What is it?",
                 "--max-new-tokens", "4", "--device", "cpu", "--config",
                 str(ROOT / "configs/visiondrop/llava15_64.yaml")]) == 0
    assert capsys.readouterr().out.endswith("\n")


def test_generation_without_cache_equals_cached(base):
    tok, model = base
    prompts = [encode_prompt(tok, "<image>\nWhat is it?"), encode_prompt(tok, "<image>\nHow many cups are there?")]
    ids, mask = right_pad(prompts)
    images = torch.cat([stand_in_image(6), stand_in_image(7)])
    cached = model.generate(ids, images=images, attention_mask=mask, max_new_tokens=4, return_logits=True)
    recomputed = model.generate(ids, images=images, attention_mask=mask, max_new_tokens=4, return_logits=True,
                                use_cache=False)
    assert torch.equal(cached[0], recomputed[0])
    assert_close(recomputed[1], cached[1], atol=1e-5, rtol=0)
