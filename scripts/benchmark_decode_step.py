"""One graph-replayed decode step, module layers vs fused layers (docs/efficiency.md, 'The decode step').

    python scripts/benchmark_decode_step.py --random-weights llava-v1.5-7b \\
        --configs configs/none/llava15.yaml configs/visiondrop/llava15_64.yaml --out results/decode_step.json

Per config: one prefill (text + one image, batch `--batch`) into a static KV cache, then `--new-tokens` decode
steps replayed from a CUDA graph, first with the LlamaDecoderLayer modules (`fused=False`), then with the fused
layers (llava.model.fused_decode); CUDA events around each run of consecutive steps, median over `--repeats` runs.
The fused run is fed the module run's greedy tokens, and the share of steps whose next token agrees is reported.
% of HBM = (decode weight bytes + the KV bytes of the keys each step sees) / step time / `--peak-hbm-tbs`.
`--profile` also lists the GPU kernels of one step of each (torch profiler): count and time, GEMMs apart.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import decode_weight_bytes  # noqa: E402
from benchmarks.runner import make_inputs  # noqa: E402
from llava.model.decoding import new_cache  # noqa: E402
from llava.model.graph_decode import DecodeStep  # noqa: E402
from llava.model.random_weights import random_llava  # noqa: E402
from visiondrop.config import load_config  # noqa: E402

GEMM_NAMES = ("gemm", "nvjet", "cutlass", "sm90_xmma", "splitk")  # cuBLAS kernel names on Hopper


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--random-weights", default="llava-v1.5-7b", help="model shape (llava.model.random_weights)")
    p.add_argument("--configs", nargs="+", default=["configs/none/llava15.yaml"], help="pruning config YAMLs")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--text-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64, help="decode steps per timed run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-hbm-tbs", type=float, default=4.8, help="HBM bandwidth limit, TB/s (H200 spec)")
    p.add_argument("--profile", action="store_true", help="list the kernels of one step (torch profiler)")
    p.add_argument("--out", help="JSON file for the results")
    return p.parse_args(argv)


def prefill(model, inputs, new_tokens: int) -> tuple:
    """A prefill into a fresh static cache: (cache, segments, first greedy token [B])."""
    cache = new_cache(model, new_tokens, cuda_graph=True)
    batch = model.prepare_multimodal_batch(inputs.input_ids, None, inputs.images, inputs.image_sizes)
    final, last, segments, _ = model.model.prefill(batch, cache)
    rows = torch.arange(final.shape[0], device=final.device)
    return cache, segments, model.lm_head(final[rows, last]).argmax(-1)


def kv_bytes_seen(cache, segments, batch: int, new_tokens: int) -> float:
    """Mean over the steps of the key and value bytes every layer's attention needs (its prompt + steps so far)."""
    total = 0
    for seg, stop in zip(segments, [s.first_layer for s in segments[1:]] + [None]):
        layers = [i for i in cache.buffers if i >= seg.first_layer and (stop is None or i < stop)]
        keys = cache.buffers[layers[0]][0]
        per_key = batch * keys.shape[1] * keys.shape[3] * keys.element_size() * 2
        total += len(layers) * per_key * (seg.key_mask.shape[1] + (new_tokens + 1) / 2)
    return total


def run_steps(step: DecodeStep, cache, segments, first: torch.Tensor, tokens: list | None) -> tuple:
    """`len(tokens)` (or greedy: new_tokens) consecutive steps from a fresh load; (ms, next tokens)."""
    step.load(cache, segments)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    token, chosen = first, []
    start.record()
    for i in range(len(tokens)):
        token = step(token if tokens[i] is None else tokens[i]).argmax(-1)
        chosen.append(token)
    end.record()
    end.synchronize()
    return start.elapsed_time(end), chosen


def profile_step(step: DecodeStep, token: torch.Tensor) -> dict:
    """Kernels of one replayed step: count and GPU time, GEMMs and the rest, the costliest names."""
    from torch.profiler import ProfilerActivity, profile

    step(token)  # captured before profiling
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step(token)
        torch.cuda.synchronize()
    kernels = {}
    for e in prof.key_averages():
        if e.device_type.name == "CUDA" and e.count:
            kernels[e.key] = (e.count, e.self_device_time_total / 1e3)
    gemm = {k: v for k, v in kernels.items() if any(n in k.lower() for n in GEMM_NAMES)}
    rest = {k: v for k, v in kernels.items() if k not in gemm}
    top = sorted(rest.items(), key=lambda kv: -kv[1][1])[:12]
    return {"gemm_kernels": sum(c for c, _ in gemm.values()), "gemm_ms": sum(t for _, t in gemm.values()),
            "other_kernels": sum(c for c, _ in rest.values()), "other_ms": sum(t for _, t in rest.values()),
            "other_top": [{"name": k[:90], "count": c, "ms": round(t, 4)} for k, (c, t) in top]}


def measure(model, config_path: str, args: argparse.Namespace) -> dict:
    model.set_pruning(load_config(config_path))
    inputs = make_inputs(model, args.batch, args.text_tokens)
    cache, segments, first = prefill(model, inputs, args.new_tokens)
    steps = {fused: DecodeStep(model, cache, segments, replay=True, fused=fused) for fused in (False, True)}
    assert steps[True].fused, "the fused layers do not apply to this model"
    greedy = [None] * args.new_tokens
    _, reference = run_steps(steps[False], cache, segments, first, greedy)  # captures; the module run's tokens
    fed = [first, *reference[:-1]]
    out = {"config": config_path, "batch": args.batch, "new_tokens": args.new_tokens}
    bytes_per_step = decode_weight_bytes(model) + kv_bytes_seen(cache, segments, args.batch, args.new_tokens)
    for fused, name in ((False, "modules"), (True, "fused")):
        times, agree = [], None
        for repeat in range(args.repeats + 1):  # the first run of the fused step captures its graph
            ms, chosen = run_steps(steps[fused], cache, segments, first, fed)
            if repeat:
                times.append(ms / args.new_tokens)
            agree = sum(bool(torch.equal(a, b)) for a, b in zip(chosen, reference)) / len(reference)
        step_ms = statistics.median(times)
        out[name] = {"step_ms": step_ms, "step_ms_runs": times, "token_agreement": agree,
                     "hbm_pct": 100 * bytes_per_step / (step_ms * 1e-3) / (args.peak_hbm_tbs * 1e12)}
        if args.profile:
            steps[fused].load(cache, segments)
            out[name]["kernels"] = profile_step(steps[fused], first)
    out["bytes_per_step"] = bytes_per_step
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device (the step is replayed from a CUDA graph)")
    model = random_llava(args.random_weights, torch.float16, "cuda")
    results = []
    with torch.no_grad():
        for path in args.configs:
            results.append(measure(model, path, args))
            r = results[-1]
            print(f"{path}: bytes/step {r['bytes_per_step'] / 1e9:.2f} GB")
            for name in ("modules", "fused"):
                m = r[name]
                print(f"  {name:8s} {m['step_ms']:.3f} ms/step ({min(m['step_ms_runs']):.3f}-"
                      f"{max(m['step_ms_runs']):.3f}), {m['hbm_pct']:.1f} % of HBM, token agreement "
                      f"{100 * m['token_agreement']:.1f} %")
                if "kernels" in m:
                    k = m["kernels"]
                    print(f"    GEMM {k['gemm_kernels']} kernels {k['gemm_ms']:.3f} ms, other "
                          f"{k['other_kernels']} kernels {k['other_ms']:.3f} ms")
                    for e in k["other_top"]:
                        print(f"      {e['count']:5d} x {e['ms']:.4f} ms  {e['name']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                                              "results": results}, indent=1))


if __name__ == "__main__":
    main()
