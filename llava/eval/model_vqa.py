"""Answer generation for JSONL question files, one question at a time (LLaVA-Bench, MM-Vet; 1024 new tokens).

Same answers and flags as model_vqa_loader; only the default token limit differs, as in LLaVA:
       python -m llava.eval.model_vqa --model-path CKPT --question-file Q.jsonl --image-folder DIR --answers-file A
"""

from __future__ import annotations

import sys

from llava.eval import model_vqa_loader


def main(argv: list[str] | None = None) -> int:
    """Generate (or resume) the answers of one chunk with up to 1024 new tokens each."""
    return model_vqa_loader.main(argv, max_new_tokens=1024)


if __name__ == "__main__":
    sys.exit(main())
