"""One graph-replayed decode step, module layers vs fused layers (docs/efficiency.md, 'The decode step').

    python scripts/benchmark_decode_step.py --random-weights llava-v1.5-7b \\
        --configs configs/none/llava15.yaml configs/visiondrop/llava15_64.yaml --out results/decode_step.json

Per config: one prefill (text + one image, batch `--batch`) into a static KV cache, then `--new-tokens` decode
steps replayed from a CUDA graph, first with the LlamaDecoderLayer modules (`fused=False`), then with the fused
layers (llava.model.fused_decode); CUDA events around each run of consecutive steps, median over `--repeats` runs.
The fused run is fed the module run's greedy tokens, and the share of steps whose next token agrees is reported.
% of HBM = (decode weight bytes + the KV bytes of the keys each step sees) / step time / `--peak-hbm-tbs`.
`--profile` also lists the GPU kernels of one step of each (torch profiler): count and time, GEMMs apart;
`--attention-chunks 64,256` also times the fused step with other key-chunk sizes of its attention kernel
(visiondrop.decode_kernels.CHUNK, default 128).
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
from visiondrop import decode_kernels  # noqa: E402
from visiondrop.config import load_config  # noqa: E402
from visiondrop.timing import SectionTimer  # noqa: E402

GEMM_NAMES = ("gemm", "nvjet", "cutlass", "sm90_xmma", "splitk")  # cuBLAS kernel names on Hopper


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--random-weights", default="llava-v1.5-7b", help="model shape (llava.model.random_weights)")
    p.add_argument("--configs", nargs="+", default=["configs/none/llava15.yaml"], help="pruning config YAMLs")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu: a smoke run of the same steps without graphs (Triton's interpreter, TRITON_INTERPRET=1)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--text-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64, help="decode steps per timed run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-hbm-tbs", type=float, default=4.8, help="HBM bandwidth limit, TB/s (H200 spec)")
    p.add_argument("--profile", action="store_true", help="list the kernels of one step (torch profiler)")
    p.add_argument("--attention-chunks", default="", help="comma list: other keys-per-program of the fused "
                   f"attention to time (default {decode_kernels.CHUNK})")
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


def run_steps(step: DecodeStep, cache, segments, first: torch.Tensor, tokens: list) -> tuple:
    """`len(tokens)` consecutive steps from a fresh load, fed `tokens` (None: the previous step's greedy token);
    (ms, next tokens). CUDA events on a GPU, the wall clock on a CPU (a smoke run)."""
    step.load(cache, segments)
    timer = SectionTimer(str(first.device))
    token, chosen = first, []
    with timer.section("steps"):
        for fed in tokens:
            token = step(token if fed is None else fed).argmax(-1)
            chosen.append(token)
    return timer.sections_ms()["steps"], chosen


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


def time_step(step: DecodeStep, cache, segments, first, fed: list, reference: list, args) -> dict:
    """Median ms per step over `args.repeats` runs fed `fed` (after one that captures), the agreement of its next
    tokens with `reference`, and the kernel profile with `--profile`."""
    times, agree = [], None
    for repeat in range(args.repeats + 1):
        ms, chosen = run_steps(step, cache, segments, first, fed)
        if repeat:
            times.append(ms / args.new_tokens)
        agree = sum(bool(torch.equal(a, b)) for a, b in zip(chosen, reference)) / len(reference)
    out = {"step_ms": statistics.median(times), "step_ms_runs": times, "token_agreement": agree}
    if args.profile:
        step.load(cache, segments)
        out["kernels"] = profile_step(step, first)
    return out


def measure(model, config_path: str, args: argparse.Namespace) -> dict:
    model.set_pruning(load_config(config_path))
    inputs = make_inputs(model, args.batch, args.text_tokens)
    cache, segments, first = prefill(model, inputs, args.new_tokens)
    replay = cache.buffers[0][0].is_cuda
    modules = DecodeStep(model, cache, segments, replay, fused=False)
    _, reference = run_steps(modules, cache, segments, first, [None] * args.new_tokens)  # greedy; captures
    fed = [first, *reference[:-1]]
    out = {"config": config_path, "batch": args.batch, "new_tokens": args.new_tokens,
           "bytes_per_step": decode_weight_bytes(model) + kv_bytes_seen(cache, segments, args.batch, args.new_tokens),
           "modules": time_step(modules, cache, segments, first, fed, reference, args)}
    default = decode_kernels.CHUNK
    chunks = [int(c) for c in args.attention_chunks.split(",") if c.strip()]
    try:
        for chunk in [default, *(c for c in chunks if c != default)]:
            decode_kernels.CHUNK = chunk  # read when the step graph is captured
            fused = DecodeStep(model, cache, segments, replay, fused=True)
            assert fused.fused, "the fused layers do not apply to this model"
            name = "fused" if chunk == default else f"fused_chunk{chunk}"
            out[name] = time_step(fused, cache, segments, first, fed, reference, args)
    finally:
        decode_kernels.CHUNK = default
    for m in out.values():
        if isinstance(m, dict):
            m["hbm_pct"] = 100 * out["bytes_per_step"] / (m["step_ms"] * 1e-3) / (args.peak_hbm_tbs * 1e12)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.profile and not args.device.startswith("cuda"):
        raise SystemExit("--profile needs a CUDA device")
    model = random_llava(args.random_weights, torch.float16, args.device)
    results = []
    with torch.no_grad():
        for path in args.configs:
            results.append(measure(model, path, args))
            r = results[-1]
            print(f"{path}: bytes/step {r['bytes_per_step'] / 1e9:.2f} GB")
            for name, m in r.items():
                if not isinstance(m, dict):
                    continue
                print(f"  {name:15s} {m['step_ms']:.3f} ms/step ({min(m['step_ms_runs']):.3f}-"
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
        device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
        Path(args.out).write_text(json.dumps({"device": device, "torch": torch.__version__,
                                              "results": results}, indent=1))


if __name__ == "__main__":
    main()
