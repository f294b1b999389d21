"""Measure what each named baseline option changes in the kept visual tokens, on the tiny random checkpoints.

Usage: python scripts/baseline_variants.py [--samples 8]
For every (config, option) pair of docs/baselines.md ("Fairness") the default and the variant run on the same
stand-in images and questions; printed per pair: the model precision, the mean visual tokens per layer of both
and, per stage (0 = the tokens entering the LLM, then every in-LLM pruning stage), the share of the default's
kept tokens (by tower origin; a merged token counts as its target) that the variant does not keep.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llava.conversation import build_prompt  # noqa: E402
from llava.mm_utils import process_images, tokenizer_image_token  # noqa: E402
from llava.model.tiny import tiny_llava_next_path, tiny_llava_path  # noqa: E402
from llava.model.visiondrop_llava import load_model_for_eval  # noqa: E402
from visiondrop.config import load_config  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUESTIONS = ("What is on the table next to the red cup?", "Is it sunny?", "How many people are there?")
# (label, model, dtype, config, default overrides, variant overrides, decode steps)
PAIRS = [
    ("VisPruner ties=unstable", "1.5", torch.float32, "vispruner/llava15_64.yaml", [], ["ties=unstable"], 0),
    ("VisPruner ties=unstable (fp16 tower)", "next", torch.float16, "vispruner/llava15_64.yaml",
     ["model=llava-next-7b", "budget=320"], ["model=llava-next-7b", "budget=320", "ties=unstable"], 0),
    ("VisPruner precision=fp32 (fp16 tower)", "next", torch.float16, "vispruner/llava15_64.yaml",
     ["model=llava-next-7b", "budget=320"], ["model=llava-next-7b", "budget=320", "precision=fp32"], 0),
    ("VisionZip cls_softmax=fp32 (fp16 tower)", "next", torch.float16, "visionzip/llava_next_320.yaml", [],
     ["cls_softmax=fp32"], 0),
    ("SparseVLM 64 matched vs published", "1.5", torch.float32, "sparsevlm/llava15_64.yaml", [],
     ["tokens=[11, 11, 5]", "allow_budget_mismatch=false", "derived=true"], 0),
    ("SparseVLM 192 matched vs published", "1.5", torch.float32, "sparsevlm/llava15_192.yaml", [],
     ["tokens=[272, 180, 99]", "allow_budget_mismatch=false", "derived=true"], 0),
    ("SparseVLM seed=1", "1.5", torch.float32, "sparsevlm/llava15_64.yaml", [], ["seed=1"], 0),
    ("SparseVLM seed=1", "1.5", torch.float16, "sparsevlm/llava15_64.yaml", [], ["seed=1"], 0),
    ("SparseVLM cluster_precision=fp32", "1.5", torch.float16, "sparsevlm/llava15_64.yaml", [],
     ["cluster_precision=fp32"], 0),
    ("FastV window_offset=1", "1.5", torch.float32, "fastv/llava15_64.yaml", [],
     ["window_offset=1", "allow_budget_mismatch=true"], 0),
    ("FastV decode=dynamic (after 4 steps)", "1.5", torch.float32, "fastv/llava15_64.yaml", [], ["decode=dynamic"], 4),
]


def samples(model, tok, kind: str, n: int) -> list[dict]:
    """n (prompt ids, images, image sizes) inputs: stand-in pixels (1.5) or random 672x672 pictures (NeXT)."""
    out = []
    for i in range(n):
        ids = tokenizer_image_token(build_prompt("<image>\n" + QUESTIONS[i % len(QUESTIONS)]), tok,
                                    return_tensors="pt")[None]
        if kind == "1.5":
            image = torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(i))
            out.append(dict(input_ids=ids, images=image.to(model.dtype)))
        else:
            picture = Image.fromarray(np.random.RandomState(i).randint(0, 256, (672, 672, 3), dtype=np.uint8))
            pixels = process_images([picture], "anyres", 336, model.config.image_grid_pinpoints)
            out.append(dict(input_ids=ids, images=[p.to(model.dtype) for p in pixels], image_sizes=[(672, 672)]))
    return out


def kept(model, inputs: dict, steps: int) -> tuple[list[set[int]], float]:
    """Kept tower origins per stage and the mean visual tokens per layer (of the last prefill: with `steps`
    dynamic decode re-runs it at every step)."""
    if steps:
        model.generate(**inputs, max_new_tokens=steps, min_new_tokens=steps)
    else:
        model(**inputs)
    stats = model.last_stats
    return [set(o[0].tolist()) for o in stats.stage_origins], stats.average_visual_tokens[0]


def measure(label, kind, dtype, config, default, variant, steps, n: int) -> str:
    path = tiny_llava_path() if kind == "1.5" else tiny_llava_next_path(tiny_llava_path().parent)
    tok, model, _, _ = load_model_for_eval(str(path), None, dtype=dtype, device="cpu")
    runs = []
    for overrides in (default, variant):
        model.set_pruning(load_config(CONFIGS / config, overrides))
        runs.append([kept(model, x, steps) for x in samples(model, tok, kind, n)])
    changed = [[len(a - b) / max(1, len(a)) for a, b in zip(d[0], v[0])] for d, v in zip(*runs)]
    per_stage = " / ".join(f"{100 * np.mean(col):.1f}%" for col in zip(*changed))
    budgets = [np.mean([r[1] for r in run]) for run in runs]
    return (f"| {label} | {kind} {str(dtype).removeprefix('torch.')} | {budgets[0]:.2f} | {budgets[1]:.2f} | "
            f"{per_stage} |")


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: one Markdown row per pair."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=8)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("| option | tiny model | B default | B variant | kept tokens changed, per stage |")
    print("|---|---|---:|---:|---|")
    with torch.no_grad():
        for pair in PAIRS:
            print(measure(*pair, args.samples), flush=True)


if __name__ == "__main__":
    main()
