"""Prompt ids equal the original LLaVA's (transformers 4.37 slow LlamaTokenizer, i.e. sentencepiece) whatever
the checkpoint's model_type, on a LLaMA-style sentencepiece model whose all-space pieces have low ids."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

import llava.model.tiny_tokenizer as tiny
from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import build_prompt
from llava.mm_utils import tokenizer_image_token
from llava.model.tokenizer import load_tokenizer

SPECIAL = re.compile(r"(<s>|</s>|<unk>)")
PROMPTS = [
    build_prompt("<image>\nWhat is  in the image?"),  # double space
    build_prompt("<image>\nRead   the sign.\n\nAnswer the question using a single word or phrase."),
    build_prompt("<image> What is it?"),  # the chunk after <image> starts with a space
    " Look at<image>\nthis.",  # the chunk before <image> starts with a space
    "\nFirst<image>\n then<image>  compare.",  # ... with a newline; chunks with leading spaces
    "<image>",
    "USER: <image>\nQ1 ASSISTANT: A1</s>USER:  Q2 ASSISTANT:",  # a multi-turn prompt holds </s>
    "Tabs\tand a literal \u2581 and 请 ",
]


def llama_style_model() -> bytes:
    """The tiny BPE model (identity normalizer, dummy prefix, byte fallback) with LLaMA's all-space pieces:
    low ids right after the byte pieces, score -1e9."""
    model = pb.ModelProto.FromString(tiny.train_tiny_model())
    assert model.normalizer_spec.add_dummy_prefix and model.trainer_spec.byte_fallback
    first = next(i for i, p in enumerate(model.pieces) if p.type == pb.ModelProto.SentencePiece.NORMAL)
    for k, spaces in enumerate(["\u2581\u2581", "\u2581\u2581\u2581\u2581", "\u2581\u2581\u2581"]):
        model.pieces.insert(first + k, pb.ModelProto.SentencePiece(piece=spaces, score=-1e9))
    return model.SerializeToString()


@pytest.fixture(scope="module")
def sentencepiece_pair() -> tuple[spm.SentencePieceProcessor, spm.SentencePieceProcessor]:
    """The model as trained, and the same without the dummy prefix (how 4.37 encodes text after a special token)."""
    proto = llama_style_model()
    no_prefix = pb.ModelProto.FromString(proto)
    no_prefix.normalizer_spec.add_dummy_prefix = False
    return (spm.SentencePieceProcessor(model_proto=proto),
            spm.SentencePieceProcessor(model_proto=no_prefix.SerializeToString()))


def reference_ids(sp_pair, text: str) -> list[int]:
    """4.37's LlamaTokenizer (legacy false, add_bos_token) from sentencepiece alone: BOS, the text before the
    first special token with the dummy prefix, special tokens as themselves, later text without the prefix."""
    sp, no_prefix = sp_pair
    ids = [sp.bos_id()]
    for i, part in enumerate(SPECIAL.split(text)):
        if SPECIAL.fullmatch(part):
            ids.append(sp.piece_to_id(part))
        elif part:
            ids += (sp if i == 0 else no_prefix).encode(part)
    return ids


def reference_prompt(sp_pair, prompt: str) -> list[int]:
    """LLaVA's splice: each <image>-separated chunk tokenized alone, one BOS, IMAGE_TOKEN_INDEX between."""
    chunks = [reference_ids(sp_pair, c) for c in prompt.split("<image>")]
    ids = chunks[0]
    for chunk in chunks[1:]:
        ids += [IMAGE_TOKEN_INDEX] + chunk[1:]
    return ids


@pytest.fixture(scope="module", params=["llava", "llava_llama", None])
def checkpoint(request, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(f"tok-{request.param}")
    tiny.train_tiny_tokenizer(out)
    (out / "tokenizer.model").write_bytes(llama_style_model())
    if request.param is not None:
        (out / "config.json").write_text(json.dumps({"model_type": request.param, "architectures":
                                                     ["LlavaLlamaForCausalLM"]}))
    return out


@pytest.mark.parametrize("prompt", PROMPTS)
def test_prompt_ids_equal_sentencepiece_for_every_model_type(checkpoint, sentencepiece_pair, prompt):
    tokenizer = load_tokenizer(checkpoint)
    assert tokenizer_image_token(prompt, tokenizer) == reference_prompt(sentencepiece_pair, prompt)


def test_double_spaces_use_the_score_ranked_merges(checkpoint, sentencepiece_pair):
    tokenizer = load_tokenizer(checkpoint)
    space, double = sentencepiece_pair[0].piece_to_id("\u2581"), sentencepiece_pair[0].piece_to_id("\u2581\u2581")
    ids = tokenizer("is  the").input_ids
    assert double not in ids and ids.count(space) == 1  # "▁is", "▁", "▁the", as sentencepiece merges
    what = sentencepiece_pair[0].piece_to_id("\u2581What")
    assert tokenizer(" What").input_ids == [1, space, what]  # 4.37 keeps the "▁" of a leading space


def test_decoding_equals_sentencepiece(checkpoint, sentencepiece_pair):
    tokenizer = load_tokenizer(checkpoint)
    sp = sentencepiece_pair[0]
    for text in ["Yes", "Yes,  it is\n\nblue 请", "  two leading spaces", "a\tb"]:
        ids = sp.encode(text)
        assert tokenizer.decode(ids, skip_special_tokens=True) == sp.decode(ids)
        assert tokenizer.batch_decode([ids + [sp.eos_id()]], skip_special_tokens=True) == [sp.decode(ids)]


def test_the_builder_loads_this_tokenizer(tiny_path):
    from llava.model.builder import load_pretrained_model
    from llava.model.tokenizer import LlavaLlamaTokenizer

    assert isinstance(load_pretrained_model(str(tiny_path))[0], LlavaLlamaTokenizer)
