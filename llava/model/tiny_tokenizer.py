"""A tiny, deterministic Llama-style sentencepiece tokenizer trained in-process for offline tests.

transformers 5.x findings (checked on 5.23):

* There is no "slow" sentencepiece Llama tokenizer any more: ``AutoTokenizer`` pops and ignores
  ``use_fast``, and ``LlamaTokenizer`` (== ``LlamaTokenizerFast``) is ``tokenizers``-backed. From a bare
  ``tokenizer.model`` it extracts vocab + merges with ``SentencePieceExtractor`` (needs the
  ``sentencepiece`` package) and rebuilds a byte-fallback BPE with a ``Metaspace("▁")`` pre-tokenizer and
  no normalizer. No ``tokenizer.json`` is needed; "LlamaTokenizer" in the config picks that class.
* ``legacy`` defaults to False -> ``prepend_scheme="first"``: one dummy "▁" at the start of the text, as
  the 4.x slow tokenizer with ``legacy=False`` (the original LLaVA config).
* ``add_bos_token`` defaults to **False** in the backend (despite the class docstring); the original
  LLaVA ``tokenizer_config.json`` sets it true, so it is written explicitly to get ``<s>`` (id 1).
* The 4.x ``{"__type": "AddedToken", ...}`` dicts of the original config still load, but the
  ``tokenizers`` library prints "Ignored unknown kwarg option __type" for each; plain strings are used.
* Text that *starts* with a space differs from sentencepiece / the 4.x slow tokenizer: ``Metaspace``
  adds no dummy prefix when the text already begins with "▁", so " x" gives one "▁" fewer. LLaVA prompt
  chunks never start with a space (system prompt, "\n" or empty), so ``tokenizer_image_token`` is
  unaffected.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import sentencepiece as spm

from llava.conversation import LLAVA_V1_SYSTEM, VICUNA_SYSTEM

TINY_VOCAB_SIZE = 480
"""Vocabulary size of the trained model (including <unk>, <s>, </s> and the 256 byte pieces)."""

_CORPUS_LINES: tuple[str, ...] = (
    VICUNA_SYSTEM,
    LLAVA_V1_SYSTEM,
    "USER: What is in the image? ASSISTANT: A cat sitting on a red chair.",
    "USER: Is it overcast? ASSISTANT: No",
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly.",
    "When the provided information is insufficient, respond with 'Unanswerable'.",
    "Reference OCR token: STOP, 25, OPEN, the, sale",
    "Is there a dog in the image? yes",
    "Is there a person in the picture? no",
    "What color is the car? The car is blue.",
    "How many people are there? There are 2 people.",
    "What is the man holding? He is holding an umbrella.",
    "Where is the woman standing? She is standing on the street near a bus.",
    "What is on the table? A plate with food, a cup and a bottle.",
    "Which side of the picture is the tree on? The tree is on the left side.",
    "Are there both cars and trucks in this photo? Yes, there are.",
    "What kind of animal is this? It is a horse in a green field.",
    "Options: A. red B. green C. blue D. yellow E. white",
    "A B C D E",
    "yes no Yes No",
    "0 1 2 3 4 5 6 7 8 9 10 12 20 100 2024",
    "The sky is cloudy and the water looks calm.",
    "Describe the image in detail. The image shows a kitchen with a window, a sink and a small table.",
    "What is the number on the shirt? 23",
    "What time does the clock show? It shows 10:30.",
    "Is the light on or off? It is on.",
    "Who is wearing a hat? The boy on the right is wearing a hat.",
)


def _corpus() -> list[str]:
    """Return the fixed training sentences (repeated so that frequent pairs dominate deterministically)."""
    return [line for _ in range(4) for line in _CORPUS_LINES]


def train_tiny_model(vocab_size: int = TINY_VOCAB_SIZE) -> bytes:
    """Train the tiny sentencepiece BPE model in memory and return the serialized ``.model`` bytes."""
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_writer=writer,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return writer.getvalue()


def train_tiny_tokenizer(out_dir: str | Path) -> None:
    """Write tokenizer.model, tokenizer_config.json and special_tokens_map.json into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(train_tiny_model())
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": False,
        "model_max_length": 2048,
        "pad_token": "<unk>",
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
    }
    special_map = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<unk>",
        "unk_token": "<unk>",
    }
    for name, payload in (("tokenizer_config.json", config), ("special_tokens_map.json", special_map)):
        (out / name).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
