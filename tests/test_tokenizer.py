"""Tiny offline tokenizer and `tokenizer_image_token` splicing ids (docs/pipeline.md, 'Tokenization')."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

import llava.model.tiny_tokenizer as tiny
from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import build_prompt
from llava.mm_utils import tokenizer_image_token


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny_llava_tokenizer")
    tiny.train_tiny_tokenizer(out)
    return out


@pytest.fixture(scope="module")
def tok(tok_dir: Path):
    return AutoTokenizer.from_pretrained(tok_dir, use_fast=False)


def by_hand(tokenizer, prompt: str) -> list[int]:
    """Reference splice: tokenize chunks separately, one BOS, -200 between chunks."""
    chunks = [tokenizer(c).input_ids for c in prompt.split("<image>")]
    assert all(c[0] == 1 for c in chunks)
    ids = [1]
    for i, c in enumerate(chunks):
        ids += ([IMAGE_TOKEN_INDEX] if i else []) + c[1:]
    return ids


def test_files_and_config(tok_dir: Path) -> None:
    assert {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"} <= {
        p.name for p in tok_dir.iterdir()
    }
    cfg = json.loads((tok_dir / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "LlamaTokenizer" and cfg["add_bos_token"] is True
    assert cfg["add_eos_token"] is False and cfg["padding_side"] == "right"


def test_training_is_deterministic() -> None:
    assert tiny.train_tiny_model() == tiny.train_tiny_model()


def test_loads_with_llava_settings(tok, tok_dir: Path) -> None:
    assert len(tok) == tiny.TINY_VOCAB_SIZE
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.pad_token_id) == (1, 2, 0, 0)
    assert tok.pad_token == "<unk>" and tok.padding_side == "right" and tok.model_max_length == 2048
    ids = tok("Is it overcast?").input_ids
    assert ids[0] == 1 and 2 not in ids
    default = AutoTokenizer.from_pretrained(tok_dir)
    assert default("Is it overcast?").input_ids == ids
    assert tok.decode(ids, skip_special_tokens=True) == "Is it overcast?"


def test_matches_sentencepiece(tok, tok_dir: Path) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model"))
    for text in [build_prompt("<image>").split("<image>")[0], "\nIs it overcast? yes", "a\n\nb 123 Zq 请"]:
        assert tok(text).input_ids == [1, *sp.encode(text)]


@pytest.mark.parametrize(
    "prompt",
    [
        "<image>\nWhat is this?",
        "Describe <image> briefly.",
        "What is in the picture?\n<image>",
        "First <image> then <image>\nCompare.",
        "<image><image><image>\nvideo",
    ],
)
def test_tokenizer_image_token_positions(tok, prompt: str) -> None:
    ids = tokenizer_image_token(prompt, tok)
    assert ids == by_hand(tok, prompt)
    assert ids.count(IMAGE_TOKEN_INDEX) == prompt.count("<image>")
    assert ids[0] == 1 and ids.count(1) == 1
    tensor = tokenizer_image_token(prompt, tok, return_tensors="pt")
    assert tensor.dtype == torch.long and tensor.tolist() == ids


def test_placeholder_at_start_and_end(tok) -> None:
    assert tokenizer_image_token("<image>\nQ", tok)[:2] == [1, IMAGE_TOKEN_INDEX]
    assert tokenizer_image_token("Q <image>", tok)[-1] == IMAGE_TOKEN_INDEX


def test_chunks_differ_from_whole_prompt(tok) -> None:
    prompt = build_prompt("<image>\nIs it overcast?")
    whole = tok(prompt.replace("<image>", "")).input_ids
    spliced = [i for i in tokenizer_image_token(prompt, tok) if i != IMAGE_TOKEN_INDEX]
    assert spliced != whole  # the chunk after <image> gets its own dummy-prefix "▁"


def test_image_index_is_prefix_length(tok) -> None:
    prompt = build_prompt("<image>\nIs it overcast?\nAnswer the question using a single word or phrase.")
    prefix = prompt.split("<image>")[0]
    assert prefix.endswith(" USER: ")
    ids = tokenizer_image_token(prompt, tok)
    assert ids.index(IMAGE_TOKEN_INDEX) == len(tok(prefix).input_ids)


def test_bad_return_tensors(tok) -> None:
    with pytest.raises(ValueError, match="np"):
        tokenizer_image_token("<image>", tok, return_tensors="np")
