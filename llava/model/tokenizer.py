"""LLaVA's tokenizer exactly: LLaMA's sentencepiece model run as transformers 4.37's slow `LlamaTokenizer` ran it.

transformers 5.x builds a `tokenizers` BPE for a LlamaTokenizer checkpoint, and which one depends on the
config's `model_type`: for some, merges are ranked by piece id, so LLaMA's all-space pieces (low ids, score
-1e9) merge first and every double space comes out differently; with `legacy: false` a text that starts with
a space also loses the leading "▁" that 4.37 keeps. This class runs the sentencepiece model itself, whatever
the checkpoint's config says.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer
from transformers.tokenization_utils_sentencepiece import SPIECE_UNDERLINE, SentencePieceBackend

LLAMA_TOKENIZER_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast", None)


class LlavaLlamaTokenizer(SentencePieceBackend):
    """LLaMA's sentencepiece tokenizer with 4.37's `LlamaTokenizer` behaviour (prefix space, BOS, decoding)."""

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file: str, unk_token: str = "<unk>", bos_token: str = "<s>", eos_token: str = "</s>",
                 pad_token: str | None = None, add_bos_token: bool = True, add_eos_token: bool = False,
                 legacy: bool = True, **kwargs):
        self.add_bos_token, self.add_eos_token = add_bos_token, add_eos_token
        super().__init__(vocab_file=vocab_file, unk_token=unk_token, bos_token=bos_token, eos_token=eos_token,
                         pad_token=pad_token, legacy=legacy, **kwargs)

    def tokenize(self, text: str, **kwargs) -> list[str]:
        """Non-legacy: one "▁" before the whole text (a literal "▁" counts as a space), none before a special
        token that opens it."""
        if self.legacy or not text:
            return super().tokenize(text, **kwargs)
        tokens = super().tokenize(SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " "), **kwargs)
        if len(tokens) > 1 and tokens[0] == SPIECE_UNDERLINE and tokens[1] in self.all_special_tokens:
            tokens = tokens[1:]
        return tokens

    def build_inputs_with_special_tokens(self, token_ids_0: list[int],
                                         token_ids_1: list[int] | None = None) -> list[int]:
        """BOS (and EOS) around each sequence, per `add_bos_token` / `add_eos_token`."""
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        out = bos + token_ids_0 + eos
        return out if token_ids_1 is None else out + bos + token_ids_1 + eos

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: list[int] | None = None,
                                already_has_special_tokens: bool = False) -> list[int]:
        """1 where `build_inputs_with_special_tokens` put a special token."""
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, already_has_special_tokens=True)
        bos, eos = [1] if self.add_bos_token else [], [1] if self.add_eos_token else []
        out = bos + [0] * len(token_ids_0) + eos
        return out if token_ids_1 is None else out + bos + [0] * len(token_ids_1) + eos

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Pieces to text: the prefix "▁" dropped, special tokens kept verbatim, the rest decoded by sentencepiece."""
        if tokens and tokens[0].startswith(SPIECE_UNDERLINE):
            tokens = [tokens[0][1:], *tokens[1:]]
        out, pending, prev_special = "", [], False
        for i, token in enumerate(tokens):
            if token in self.all_special_tokens:
                if not prev_special and i != 0 and self.legacy:
                    out += " "
                out += self.sp_model.decode(pending) + token
                pending, prev_special = [], True
            else:
                pending.append(token)
                prev_special = False
        return out + self.sp_model.decode(pending)


def load_tokenizer(path: str | Path):
    """The checkpoint's tokenizer: LLaVA's sentencepiece one for LLaMA checkpoints, else transformers' choice."""
    root = Path(path)
    config_file = root / "tokenizer_config.json"
    fields = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if (root / "tokenizer.model").is_file() and fields.get("tokenizer_class") in LLAMA_TOKENIZER_CLASSES:
        return LlavaLlamaTokenizer.from_pretrained(str(root))
    return AutoTokenizer.from_pretrained(str(root))
