"""Shared fixtures: the tiny random LLaVA-1.5-shaped checkpoint (built once per session, original layout),
prompts from real GQA question lines shipped in tests/data, and stand-in images."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

GQA_POPE = Path(__file__).resolve().parent / "data" / "gqa_pope"  # real GQA / POPE lines, sources in data/README.md


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The tiny models' ops are too small to gain from threads, and on a busy 2-CPU machine OpenMP spinning
    makes two threads many times slower: the suite runs single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory) -> Path:
    from llava.model.tiny import tiny_llava_path

    return tiny_llava_path(tmp_path_factory.mktemp("tiny-cache"))


# Tests run in fp32 on the CPU; VISIONDROP_TEST_DEVICE=cuda VISIONDROP_TEST_DTYPE=float16 runs the same suite
# on a GPU (tolerances are set for fp32, so some comparisons are expected to fail in fp16).
TEST_DEVICE = os.environ.get("VISIONDROP_TEST_DEVICE", "cpu")
TEST_DTYPE = getattr(torch, os.environ.get("VISIONDROP_TEST_DTYPE", "float32"))
if TEST_DEVICE == "cpu":  # Triton kernels run in its interpreter (set before any kernel is defined)
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def load_tiny(tiny_path):
    """load_tiny(config=None, overrides=(), attn="sdpa") -> (tokenizer, model), fp32 on the CPU by default."""
    from llava.model.visiondrop_llava import load_model_for_eval

    def _load(config=None, overrides=(), attn="sdpa"):
        tok, model, _, _ = load_model_for_eval(str(tiny_path), config, list(overrides), dtype=TEST_DTYPE,
                                               device=TEST_DEVICE, attn_implementation=attn)
        return tok, model

    return _load


@pytest.fixture(scope="session")
def gqa_questions() -> list[dict]:
    """The first 8 questions of LLaVA's GQA test-dev file."""
    path = GQA_POPE / "gqa" / "llava_gqa_testdev_balanced.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def encode_prompt(tokenizer, question_text: str) -> torch.Tensor:
    """Question-file text (with or without '<image>') -> ids with the image placeholder, vicuna_v1 template."""
    from llava.conversation import build_prompt
    from llava.mm_utils import tokenizer_image_token

    text = question_text if "<image>" in question_text else "<image>\n" + question_text
    return tokenizer_image_token(build_prompt(text), tokenizer, return_tensors="pt")


def stand_in_image(seed: int, size: int = 336) -> torch.Tensor:
    """A deterministic random pixel tensor [1, 3, size, size] (a stand-in for a preprocessed image)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, size, size, generator=g)


def stand_in_picture(width: int, height: int, seed: int = 0):
    """A deterministic random RGB PIL image of the given size (a stand-in for a photo, before preprocessing)."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 256, (height, width, 3), dtype=np.uint8))


def assert_close(actual, expected, atol: float | None = None, rtol: float | None = None) -> None:
    """torch.testing.assert_close on float32 CPU copies. The tolerances are written for the default fp32 run;
    a reduced-precision run (VISIONDROP_TEST_DTYPE=float16 on a GPU) widens them to that precision."""
    if TEST_DTYPE != torch.float32:
        atol, rtol = max(atol or 0.0, 5e-2), max(rtol or 0.0, 1e-2)
    torch.testing.assert_close(torch.as_tensor(actual).float().cpu(), torch.as_tensor(expected).float().cpu(),
                               atol=atol, rtol=rtol)


def assert_same_greedy_tokens(expected: torch.Tensor, expected_logits: torch.Tensor, actual: torch.Tensor) -> None:
    """Greedy tokens [B, n] equal, in fp32 exactly. In a reduced-precision run two paths that sum in different
    orders may split a near-tie differently: a row may then differ from its first divergent step on, but only
    where `actual`'s token scored within a few fp16 steps of the best logit in the expected path's logits."""
    if TEST_DTYPE == torch.float32:
        assert torch.equal(expected, actual)
        return
    for row, (want, got) in enumerate(zip(expected.tolist(), actual.tolist())):
        step = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), None)
        if step is None:
            continue
        logits = expected_logits[row, step].float()
        margin = float(logits.max() - logits[got[step]])
        tie = 8 * torch.finfo(torch.float16).eps * float(logits.abs().max())
        assert margin <= tie, (f"row {row} step {step}: token {got[step]} instead of {want[step]}, "
                               f"{margin:.4f} below the best logit (a near-tie is <= {tie:.4f})")


def right_pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded id batch and attention mask from 1-D id rows."""
    longest = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), longest, dtype=torch.long)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


