"""Conversation templates and prompt rendering: LLaVA's 16 templates under their official names."""

from __future__ import annotations

import dataclasses
from enum import Enum, auto


class SeparatorStyle(Enum):
    """How messages are joined."""

    SINGLE = auto()
    TWO = auto()
    MPT = auto()
    PLAIN = auto()
    LLAMA_2 = auto()


@dataclasses.dataclass
class Conversation:
    """A chat history plus the template that renders it (`offset`: leading few-shot messages)."""

    system: str
    roles: tuple[str, str]
    messages: list[list[str | None]]
    offset: int = 0
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: str | None = None
    version: str = "Unknown"

    def copy(self) -> Conversation:
        """Return an independent copy (messages list duplicated)."""
        return dataclasses.replace(self, messages=[list(m) for m in self.messages])

    def append_message(self, role: str, message: str | None) -> None:
        """Add one turn; `None` marks the open assistant turn to be generated."""
        self.messages.append([role, message])

    def get_prompt(self) -> str:
        """Render the conversation into the model's prompt string."""
        style = self.sep_style
        if style == SeparatorStyle.LLAMA_2:
            return self._llama_2_prompt()
        seps = [self.sep, self.sep2 or ""] if style in (SeparatorStyle.TWO, SeparatorStyle.PLAIN) else [self.sep] * 2
        if style == SeparatorStyle.PLAIN:
            return self.system + "".join(f"{m}{seps[i % 2]}" for i, (_, m) in enumerate(self.messages) if m)
        joiner = "" if style == SeparatorStyle.MPT else ": "
        ret = self.system + self.sep
        for i, (role, message) in enumerate(self.messages):
            ret += f"{role}{joiner}{message}{seps[i % 2]}" if message else f"{role}{joiner.rstrip()}"
        return ret

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
MMTAG_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant is able to understand "
    "the visual content that the user provides, and assist the user with a variety of tasks using natural "
    "language.The visual content will be provided with the following format: <Image>visual content</Image>."
)
LLAVA_LLAMA_2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)
LLAMA_2_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being "
    "safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal "
    "content. Please ensure that your responses are socially unbiased and positive in nature.\n\nIf a question "
    "does not make any sense, or is not factually coherent, explain why instead of answering something not "
    "correct. If you don't know the answer to a question, please don't share false information."
)
# The two-turn example that LLaVA's `v0` / `default` template carries before the user's turn.
VICUNA_V0_EXAMPLE = [
    ["Human", "What are the key differences between renewable and non-renewable energy sources?"],
    ["Assistant",
     "Renewable energy sources are those that can be replenished naturally in a relatively short amount of time, "
     "such as solar, wind, hydro, geothermal, and biomass. Non-renewable energy sources, on the other hand, are "
     "finite and will eventually be depleted, such as coal, oil, and natural gas. Here are some key differences "
     "between renewable and non-renewable energy sources:\n"
     "1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable energy sources "
     "are finite and will eventually run out.\n"
     "2. Environmental impact: Renewable energy sources have a much lower environmental impact than non-renewable "
     "sources, which can lead to air and water pollution, greenhouse gas emissions, and other negative effects.\n"
     "3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically have lower "
     "operational costs than non-renewable sources.\n"
     "4. Reliability: Renewable energy sources are often more reliable and can be used in more remote locations "
     "than non-renewable sources.\n"
     "5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different situations "
     "and needs, while non-renewable sources are more rigid and inflexible.\n"
     "6. Sustainability: Renewable energy sources are more sustainable over the long term, while non-renewable "
     "sources are not, and their depletion can lead to economic and social instability.\n"],
]
CHATML_ROLES = ("<|im_start|>user\n", "<|im_start|>assistant\n")

conv_vicuna_v0 = Conversation(system=LLAVA_V1_SYSTEM, roles=("Human", "Assistant"), messages=VICUNA_V0_EXAMPLE,
                              offset=2, sep_style=SeparatorStyle.SINGLE, sep="###")
conv_vicuna_v1 = Conversation(system=VICUNA_SYSTEM, roles=("USER", "ASSISTANT"), messages=[],
                              sep_style=SeparatorStyle.TWO, sep=" ", sep2="</s>", version="v1")
conv_llama_2 = Conversation(system=LLAMA_2_SYSTEM, roles=("USER", "ASSISTANT"), messages=[],
                            sep_style=SeparatorStyle.LLAMA_2, sep="<s>", sep2="</s>", version="llama_v2")
conv_llava_llama_2 = dataclasses.replace(conv_llama_2, system=LLAVA_LLAMA_2_SYSTEM, messages=[])
conv_mpt = Conversation(
    system="<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. The assistant gives "
           "helpful and honest answers.",
    roles=CHATML_ROLES, messages=[], sep_style=SeparatorStyle.MPT, sep="<|im_end|>", version="mpt")
conv_llava_plain = Conversation(system="", roles=("", ""), messages=[], sep_style=SeparatorStyle.PLAIN, sep="\n")
conv_llava_v0 = Conversation(system=LLAVA_V1_SYSTEM, roles=("Human", "Assistant"), messages=[],
                             sep_style=SeparatorStyle.SINGLE, sep="###")
conv_llava_v0_mmtag = dataclasses.replace(conv_llava_v0, system=MMTAG_SYSTEM, messages=[], version="v0_mmtag")
conv_llava_v1 = dataclasses.replace(conv_vicuna_v1, system=LLAVA_V1_SYSTEM, messages=[])
conv_llava_v1_mmtag = dataclasses.replace(conv_vicuna_v1, system=MMTAG_SYSTEM, messages=[], version="v1_mmtag")
conv_mistral_instruct = dataclasses.replace(conv_llama_2, system="", messages=[], sep="")
conv_chatml_direct = Conversation(system="<|im_start|>system\nAnswer the questions.", roles=CHATML_ROLES,
                                  messages=[], sep_style=SeparatorStyle.MPT, sep="<|im_end|>", version="mpt")

default_conversation = conv_vicuna_v1
conv_templates: dict[str, Conversation] = {
    "default": conv_vicuna_v0,
    "v0": conv_vicuna_v0,
    "v1": conv_vicuna_v1,
    "vicuna_v1": conv_vicuna_v1,
    "llama_2": conv_llama_2,
    "mistral_instruct": conv_mistral_instruct,
    "chatml_direct": conv_chatml_direct,
    "mistral_direct": conv_chatml_direct,
    "plain": conv_llava_plain,
    "v0_plain": conv_llava_plain,
    "llava_v0": conv_llava_v0,
    "v0_mmtag": conv_llava_v0_mmtag,
    "llava_v1": conv_llava_v1,
    "v1_mmtag": conv_llava_v1_mmtag,
    "llava_llama_2": conv_llava_llama_2,
    "mpt": conv_mpt,
}


def build_prompt(question: str, conv_mode: str = "vicuna_v1") -> str:
    """Render a single user turn plus the open assistant turn (question already holds `<image>\\n`)."""
    if conv_mode not in conv_templates:
        raise KeyError(f"Unknown conv_mode {conv_mode!r}; choose one of {sorted(conv_templates)}")
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], question)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()
