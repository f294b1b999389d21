"""Conversation templates and prompt rendering (spec §5)."""

from __future__ import annotations

import dataclasses
from enum import Enum, auto


class SeparatorStyle(Enum):
    """How messages are joined."""

    TWO = auto()
    PLAIN = auto()
    LLAMA_2 = auto()


@dataclasses.dataclass
class Conversation:
    """A chat history plus the template that renders it."""

    system: str
    roles: tuple[str, str]
    messages: list[list[str | None]]
    sep_style: SeparatorStyle
    sep: str = " "
    sep2: str | None = None
    version: str = "unknown"

    def copy(self) -> Conversation:
        """Return an independent copy (messages list duplicated)."""
        return dataclasses.replace(self, messages=[list(m) for m in self.messages])

    def append_message(self, role: str, message: str | None) -> None:
        """Add one turn; `None` marks the open assistant turn to be generated."""
        self.messages.append([role, message])

    def get_prompt(self) -> str:
        """Render the conversation into the model's prompt string."""
        if self.sep_style == SeparatorStyle.TWO:
            seps = [self.sep, self.sep2 or ""]
            ret = self.system + seps[0]
            for i, (role, message) in enumerate(self.messages):
                ret += f"{role}: {message}{seps[i % 2]}" if message else f"{role}:"
            return ret
        if self.sep_style == SeparatorStyle.PLAIN:
            seps = [self.sep, self.sep2 or ""]
            ret = self.system
            for i, (_, message) in enumerate(self.messages):
                ret += f"{message}{seps[i % 2]}" if message else ""
            return ret
        if self.sep_style == SeparatorStyle.LLAMA_2:
            return self._llama_2_prompt()
        raise ValueError(f"Unsupported separator style: {self.sep_style}")

    def _llama_2_prompt(self) -> str:
        """Render `[INST] <<SYS>>...<</SYS>> ... [/INST] answer </s>` turns."""
        ret = ""
        for i, (_, message) in enumerate(self.messages):
            if not message:
                continue
            if i == 0 and self.system:
                message = f"<<SYS>>\n{self.system}\n<</SYS>>\n\n{message}"
            if i % 2 == 0:
                ret += f"{self.sep}[INST] {message} [/INST]"
            else:
                ret += f" {message} {self.sep2 or ''}"
        return ret.lstrip(self.sep) if self.sep else ret


VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
LLAVA_LLAMA_2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)

conv_vicuna_v1 = Conversation(
    system=VICUNA_SYSTEM,
    roles=("USER", "ASSISTANT"),
    messages=[],
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
    version="v1",
)
conv_llava_v1 = dataclasses.replace(conv_vicuna_v1, system=LLAVA_V1_SYSTEM, messages=[])
conv_llava_plain = Conversation(
    system="",
    roles=("", ""),
    messages=[],
    sep_style=SeparatorStyle.PLAIN,
    sep="\n",
    version="plain",
)
conv_llava_llama_2 = Conversation(
    system=LLAVA_LLAMA_2_SYSTEM,
    roles=("USER", "ASSISTANT"),
    messages=[],
    sep_style=SeparatorStyle.LLAMA_2,
    sep="<s>",
    sep2="</s>",
    version="llama_v2",
)
conv_mistral_instruct = Conversation(
    system="",
    roles=("USER", "ASSISTANT"),
    messages=[],
    sep_style=SeparatorStyle.LLAMA_2,
    sep="",
    sep2="</s>",
    version="llama_v2",
)

conv_templates: dict[str, Conversation] = {
    "v1": conv_vicuna_v1,
    "vicuna_v1": conv_vicuna_v1,
    "llava_v1": conv_llava_v1,
    "plain": conv_llava_plain,
    "llava_llama_2": conv_llava_llama_2,
    "mistral_instruct": conv_mistral_instruct,
}
default_conversation = conv_vicuna_v1


def build_prompt(question: str, conv_mode: str = "vicuna_v1") -> str:
    """Render a single user turn plus the open assistant turn (question already holds `<image>\\n`)."""
    if conv_mode not in conv_templates:
        raise KeyError(f"Unknown conv_mode {conv_mode!r}; choose one of {sorted(conv_templates)}")
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], question)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()
