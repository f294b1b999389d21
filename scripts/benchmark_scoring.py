"""Cost of VisionDrop's in-LLM scoring + merging next to the pruned prefill, on random weights of the
Vicuna-7B shapes (no download): time share and extra peak memory of the three LLM stages.

    python scripts/benchmark_scoring.py --visual 576 2880 --out results/scoring.json

For N visual tokens (plus --text text tokens) the LLM stages keep the schedule of the budget N/9 with the
VisionDrop rule (n1 = N/6 = 1.5 B at the encoder output is skipped here: the prefill starts with N tokens at
layer 0, the harder case for scoring). Batch 1, fp16, SDPA by default. The same stages run three ways, with
identical results: the chunked torch score (eager), the Triton score (eager), and the Triton score with every
stage replayed from a CUDA graph (the default on a GPU for small batches). Times are CUDA events on the device
timeline (docs/efficiency.md, 'Protocol': events around the selection calls, no synchronisation inside the prefill); the
selection is also timed between device synchronisations (wall clock), an upper bound that adds the host work a
running prefill hides.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import transformers
from transformers import LlamaConfig
from transformers.cache_utils import DynamicCache
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from llava.model.language_model.llava_llama import LlavaLlamaModel
from llava.model.sequence import SequenceBatch
from visiondrop.config import load_config
from visiondrop.methods import build_method

VICUNA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, max_position_embeddings=8192)


class TimedReducer:
    """Delegates to a method and times each `reduce` call: CUDA events around it (device timeline, no sync: the
    protocol of docs/efficiency.md, 'Protocol'), or with `synchronize` the host wall time between two device
    synchronisations (an upper bound that also counts host work the GPU would otherwise hide)."""

    def __init__(self, method, synchronize: bool = False):
        self.method, self.synchronize, self.spans = method, synchronize, []

    def __getattr__(self, name):
        return getattr(self.method, name)

    def reduce(self, *args):
        if self.synchronize:
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = self.method.reduce(*args)
            torch.cuda.synchronize()
            self.spans.append((time.perf_counter() - start) * 1e3)
            return out
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = self.method.reduce(*args)
        end.record()
        self.spans.append((start, end))
        return out

    def stage_ms(self) -> list[float]:
        """Milliseconds of each `reduce` call of the last prefill (call after a synchronisation)."""
        return [s if self.synchronize else s[0].elapsed_time(s[1]) for s in self.spans]


def schedule_for(n_visual: int) -> list[list[int]]:
    """LLM-stage (dominant, contextual) pairs: n_k = round(N/6 * lambda^k) shape, c = ceil(n/8)."""
    pairs = []
    for factor in (0.7336, 0.5382, 0.3948):
        n = round(n_visual / 6 * factor)
        c = -(-n // 8)
        pairs.append([n - c, c])
    return pairs


def build_llm(dtype: torch.dtype, attn: str) -> LlavaLlamaModel:
    config = LlamaConfig(**VICUNA_7B)
    config._attn_implementation = attn
    with torch.device("meta"):
        model = LlavaLlamaModel(config)
    model = model.to_empty(device="cuda")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0, 0.02)
    model = model.to(dtype)
    model.rotary_emb = LlamaRotaryEmbedding(config).cuda()  # fp32 inv_freq, as in the loader
    return model


VARIANTS = {  # llm options of each way to run the same stages (identical results)
    "torch-eager": {"kernels": "torch", "graph_max_tokens": 0},
    "triton-eager": {"kernels": "triton", "graph_max_tokens": 0},
    "triton-graph": {"kernels": "triton", "graph_max_tokens": 1 << 20},
}


def visiondrop_method(pairs, memory_mib: float, llm: dict):
    raw = {"method": "visiondrop", "encoder": {"enabled": False},
           "llm": {"tokens": pairs, "score_memory_mib": memory_mib, **llm}}
    return build_method(load_config(raw=raw))


def timed_prefill(model, batch, reducer: TimedReducer | None, repeats: int) -> dict:
    """Medians over `repeats` prefills (after 3 untimed ones) of the prefill and of the reducer's calls within it:
    CUDA events, or synchronised wall times when the reducer synchronises."""
    model.reducer = reducer
    runs = []
    for i in range(repeats + 3):
        if reducer is not None:
            reducer.spans.clear()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model.prefill(batch, DynamicCache())
        end.record()
        torch.cuda.synchronize()
        if i >= 3:
            runs.append((start.elapsed_time(end), reducer.stage_ms() if reducer else [0.0]))
    stages = zip(*(s for _, s in runs))
    return dict(prefill_ms=statistics.median(t for t, _ in runs),
                selection_ms=statistics.median(sum(s) for _, s in runs),
                selection_ms_per_stage=[statistics.median(s) for s in stages])


@torch.inference_mode()
def measure(model, n_visual: int, n_text: int, repeats: int, memory_mib: float) -> dict:
    pairs = schedule_for(n_visual)
    dtype = next(model.parameters()).dtype
    length = n_text + n_visual
    batch = SequenceBatch(
        hidden=torch.randn(1, length, 4096, device="cuda", dtype=dtype),
        key_mask=torch.ones(1, length, dtype=torch.bool, device="cuda"),
        positions=torch.arange(length, device="cuda")[None],
        visual_start=torch.tensor([35]), visual_len=torch.tensor([n_visual]),
        origin=[torch.arange(n_visual, device="cuda")])
    row = dict(n_visual=n_visual, n_text=n_text, schedule=pairs, score_memory_mib=memory_mib,
               unpruned_prefill_ms=timed_prefill(model, batch, None, repeats)["prefill_ms"])
    rope = model.rotary_emb(batch.hidden, batch.positions)
    for name, llm in VARIANTS.items():
        # Extra peak memory of a fresh method's first stage-1 call (the largest; a graph's capture included).
        method = visiondrop_method(pairs, memory_mib, llm)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        method.reduce(1, 8, batch, model.layers[8], rope)
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - base
        times = timed_prefill(model, batch, TimedReducer(method), repeats)
        wall = timed_prefill(model, batch, TimedReducer(method, synchronize=True), repeats)
        row[name] = dict(**times, share=times["selection_ms"] / times["prefill_ms"], extra_peak_mib=extra / 2**20,
                         selection_wall_ms=wall["selection_ms"],
                         selection_wall_ms_per_stage=wall["selection_ms_per_stage"])
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visual", type=int, nargs="+", default=[576, 2880])
    parser.add_argument("--text", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--score-memory-mib", type=float, default=128)
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--out", default="results/scoring.json")
    args = parser.parse_args(argv)
    model = build_llm(torch.float16, args.attn)
    rows = [measure(model, n, args.text, args.repeats, args.score_memory_mib) for n in args.visual]
    env = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, transformers=transformers.__version__,
               dtype="float16", attention=args.attn, batch=1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(environment=env, rows=rows), indent=2))
    print(f"# {env}")
    print("| N visual | unpruned prefill ms | variant | pruned prefill ms | selection ms (per stage) | share | "
          "selection wall ms, synchronised (per stage) | extra peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        for name in VARIANTS:
            v = r[name]
            stages = " + ".join(f"{x:.2f}" for x in v["selection_ms_per_stage"])
            walls = " + ".join(f"{x:.2f}" for x in v["selection_wall_ms_per_stage"])
            print(f"| {r['n_visual']} | {r['unpruned_prefill_ms']:.2f} | {name} | {v['prefill_ms']:.2f} | "
                  f"{v['selection_ms']:.2f} ({stages}) | {100 * v['share']:.2f}% | {v['selection_wall_ms']:.2f} "
                  f"({walls}) | {v['extra_peak_mib']:.1f} |")

if __name__ == "__main__":
    main()
