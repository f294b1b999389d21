"""Exact prompt strings of the conversation templates (docs/pipeline.md, 'Prompts')."""

import pytest

from llava.conversation import build_prompt, conv_templates

VICUNA_SYS = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)
LLAVA_SYS = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions."
)
GQA_Q = "<image>\nIs it overcast?\nAnswer the question using a single word or phrase."


def test_vicuna_v1_gqa_prompt_exact() -> None:
    expected = (
        VICUNA_SYS + " USER: <image>\nIs it overcast?\nAnswer the question using a single word or phrase."
        " ASSISTANT:"
    )
    assert build_prompt(GQA_Q) == expected
    assert build_prompt(GQA_Q, "vicuna_v1") == expected
    assert not expected.endswith(" ")


def test_llava_v1_video_prompt_exact() -> None:
    question = "<image>" * 8 + "\nWhat is the man doing?"
    expected = LLAVA_SYS + " USER: " + "<image>" * 8 + "\nWhat is the man doing? ASSISTANT:"
    assert build_prompt(question, "llava_v1") == expected


def test_separator_two_alternates_space_and_eos() -> None:
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message("USER", "Hi")
    conv.append_message("ASSISTANT", "Hello")
    conv.append_message("USER", "Bye")
    conv.append_message("ASSISTANT", None)
    assert conv.get_prompt() == VICUNA_SYS + " USER: Hi ASSISTANT: Hello</s>USER: Bye ASSISTANT:"


def test_copy_does_not_touch_template() -> None:
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message("USER", "x")
    assert conv_templates["vicuna_v1"].messages == []
    assert conv.copy().messages == conv.messages and conv.copy().messages is not conv.messages


def test_plain_template() -> None:
    assert build_prompt("<image>\ncaption", "plain") == "<image>\ncaption\n"


def test_llava_llama_2_single_turn() -> None:
    prompt = build_prompt("<image>\nWhat?", "llava_llama_2")
    assert prompt.startswith("[INST] <<SYS>>\nYou are a helpful language and vision assistant.")
    assert prompt.endswith("<</SYS>>\n\n<image>\nWhat? [/INST]")
    assert build_prompt("Q", "mistral_instruct") == "[INST] Q [/INST]"


def test_unknown_mode() -> None:
    with pytest.raises(KeyError, match="vicuna_v1"):
        build_prompt("q", "no_such_mode")
