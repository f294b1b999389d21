"""FLOPs, KV cache, peak memory, latency split and throughput of every config, in one run
(docs/efficiency.md, 'Protocol').

    python scripts/benchmark_efficiency.py --random-weights llava-v1.5-7b --out results/efficiency \\
        --configs configs/visiondrop/llava15_64.yaml configs/*/llava15_64.yaml --batch-sizes 1,8,16,max

The unpruned `configs/none/llava15.yaml` (LLaVA-NeXT: `configs/none/llava_next.yaml`) is always measured first
as the reference. Per config and batch size:
analytic FLOPs (measured per-layer visual counts), analytic and allocated KV bytes, peak memory, ViT / selection /
prefill / decode split, TTFT, end-to-end time for G generated tokens (EOS ignored) and the "GQA-style" G=4,
throughput and ratios to the unpruned run. Every batch (but `max`) also gets a reference row, transformers' own
`LlavaForConditionalGeneration` / `LlavaNextForConditionalGeneration` over the same tensors with its plain
`generate` (ratios to it in every table; `--no-transformers` skips it), and every row the fraction of the
physical limit it reaches (decode: HBM bytes of weights + KV per step / time vs `--peak-hbm-tbs`; TTFT: FLOPs /
time vs `--peak-tflops`). Our rows run the model's default path (CUDA graphs on a GPU in fp16 / bf16;
`--eager-decode` for the eager one). Cells run batch by batch; the JSON and Markdown are rewritten after
every cell, so a run cut short keeps what it measured. `max` = largest batch that fits (doubling, then bisection).
Configs are measured in the order given (put the important ones first when using --time-budget); the tables list
them by method and budget. Use `--random-weights tiny-llava-v1.5-7b --dtype fp32 --device cpu` for a CPU smoke run.

LLaVA-NeXT (`--random-weights llava-next-7b`, `tiny-llava-next-7b`, or an anyres checkpoint): one 672x672 image per
sample, i.e. a 2x2 grid, 5 sub-images through the ViT; `--merge-type flat` (default for random weights: 5 x 576 = 2880
visual tokens, the literature's nominal count) or `spatial_unpad` (stock v1.6: 2928 with the newlines). Configs
must target the same model (`model:` in the YAML). FLOPs count the ViT per sub-image and the projector over the
tokens actually projected.

Video-LLaVA (`--random-weights video-llava-7b`, `tiny-video-llava-7b`, or a Video-LLaVA checkpoint): one clip of 8
224x224 frames per sample (8 x 257 = 2056 visual tokens unpruned, `configs/none/video_llava.yaml` the reference);
FLOPs count the video tower per frame with its temporal attention. The transformers row is
`VideoLlavaForConditionalGeneration` on the same weights without the temporal modules (it has none).

Qwen2.5-VL (`--random-weights qwen2.5-vl-7b`, `tiny-qwen2.5-vl-7b`, or a Qwen2.5-VL checkpoint): one random-pixel
1344x1008 image per sample (1728 merged tokens under the real processor bounds) in the family's chat prompt, filled
to --text-tokens (the template places the image: --image-position does not apply); `configs/none/qwen2_5_vl.yaml`
the reference. Random weights are written once as a checkpoint in the Qwen2.5-VL layout under $VISIONDROP_CACHE and
loaded by the family's loader. FLOPs count the vision transformer's windowed and full-attention blocks and the
PatchMerger as the projector. The transformers row is `Qwen2_5_VLForConditionalGeneration` over the same modules.
Generation is eager (the family has no CUDA-graph path yet).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch
import transformers
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.analytic import analytic  # noqa: E402
from benchmarks.graphs import graph_prefill  # noqa: E402
from benchmarks.qwen_inputs import QWEN_IMAGE_SIZE  # noqa: E402
from benchmarks.reference import measure_reference, reference_inputs, reference_model  # noqa: E402
from benchmarks.report import (  # noqa: E402
    TRANSFORMERS,
    add_ratios,
    add_transformers_ratios,
    decode_weight_bytes,
    markdown,
    physical_limits,
    throughput,
)
from benchmarks.runner import (  # noqa: E402
    NEXT_IMAGE_SIZE,
    BenchInputs,
    Plan,
    anyres_crops,
    find_max_batch,
    free_memory,
    is_oom,
    make_inputs,
    measure,
    run_trial,
    sample_tower,
)
from llava.model.decoding import fast_path_applies  # noqa: E402
from llava.model.random_weights import (  # noqa: E402
    MERGE_TYPES,
    NEXT_SHAPES,
    SHAPES,
    is_anyres,
    random_qwen_path,
    shapes,
    table_model,
)
from visiondrop.config import PruningConfig, load_config  # noqa: E402
from visiondrop.flops import from_configs, from_qwen_config  # noqa: E402
from visiondrop.timing import SectionTimer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REFERENCES = {"llava-v1.5-7b": "configs/none/llava15.yaml", "llava-next-7b": "configs/none/llava_next.yaml",
              "video-llava-7b": "configs/none/video_llava.yaml", "qwen2.5-vl-7b": "configs/none/qwen2_5_vl.yaml"}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
GQA_TOKENS = 4  # "GQA-style" short answer: one prefill + 3 decoded tokens
MODES = {True: "CUDA graphs (ViT, prefill segments, decode; the default path)", False: "eager"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-path", help="LLaVA / Video-LLaVA / Qwen2.5-VL checkpoint directory (real weights)")
    src.add_argument("--random-weights", metavar="SHAPE",
                     help=f"random weights of these shapes: {', '.join(SHAPES)} (model table names)")
    p.add_argument("--vision-tower", help="CLIP directory for --model-path (default: the checkpoint's)")
    p.add_argument("--merge-type", choices=MERGE_TYPES,
                   help="NeXT sub-image merge (default: flat for random weights, the checkpoint's otherwise)")
    p.add_argument("--configs", nargs="*", default=[], help="pruning config YAMLs (the unpruned one is added)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    p.add_argument("--vision-dtype", choices=sorted(DTYPES), help="tower dtype (default: --dtype)")
    p.add_argument("--attn", default="sdpa", help="attention backend of the LLM and the tower")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-sizes", default="1,8,16,max", help="comma list; 'max' = largest that fits")
    p.add_argument("--max-batch-cap", type=int, default=256, help="upper bound of the 'max' search")
    p.add_argument("--max-batch-step", type=int, default=8, help="resolution of the 'max' bisection")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--decode-repeats", type=int, help="timed runs generating the longest G (default: all)")
    p.add_argument("--max-warmup", type=int, help="warm-up runs at the 'max' batch (default: --warmup)")
    p.add_argument("--max-repeats", type=int, help="timed runs at the 'max' batch (default: --repeats)")
    p.add_argument("--text-tokens", type=int, default=64)
    p.add_argument("--image-position", type=int, default=35,
                   help="text tokens before the image (not Qwen2.5-VL: its chat template places the image)")
    p.add_argument("--gen-tokens", default="1,32", help="end-to-end points G (tokens generated, EOS ignored)")
    p.add_argument("--cuda-graph-prefill", action="store_true", help="also time the prefill layers in a CUDA graph")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--eager-decode", action="store_true",
                      help="the eager path (default on CUDA fp16/bf16: ViT, prefill segments and decode steps "
                           "replayed from CUDA graphs, as model.generate does)")
    mode.add_argument("--cuda-graph-decode", action="store_true",
                      help="force the CUDA-graph path (also where it is not the default, e.g. its static "
                           "cache on a CPU)")
    p.add_argument("--no-transformers", action="store_true",
                   help="skip the reference row (transformers' own LLaVA class and generate, unpruned)")
    p.add_argument("--peak-hbm-tbs", type=float, default=4.8, help="HBM bandwidth limit, TB/s (H200 spec)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense fp16 limit, TFLOP/s (H200 spec)")
    p.add_argument("--time-budget", type=float, help="seconds from the start; later cells are skipped (marked)")
    p.add_argument("--out", required=True, help="output directory (efficiency.json, efficiency.md)")
    args = p.parse_args(argv)
    if args.random_weights:
        try:
            shapes(args.random_weights)
        except ValueError as err:
            p.error(f"--random-weights: {err}")
    args.batch_labels = [b.strip() for b in args.batch_sizes.split(",") if b.strip()]
    if any(b != "max" and not (b.isdigit() and int(b) > 0) for b in args.batch_labels):
        p.error(f"--batch-sizes {args.batch_sizes!r}: expected positive integers and 'max'")
    if "max" in args.batch_labels and not args.device.startswith("cuda"):
        p.error("--batch-sizes max needs a CUDA device (the search stops at the first out-of-memory error)")
    args.gen = sorted({int(g) for g in args.gen_tokens.split(",")})
    args.graphs = None if not (args.eager_decode or args.cuda_graph_decode) else args.cuda_graph_decode
    if args.gen[0] < 1:
        p.error("--gen-tokens must be >= 1")
    if args.merge_type and args.random_weights and args.random_weights not in NEXT_SHAPES:
        p.error(f"--merge-type applies to LLaVA-NeXT ({', '.join(NEXT_SHAPES)}), not {args.random_weights}")
    return args


def model_family(args: argparse.Namespace) -> str:
    """The `model:` the configs must target (a model table name): the random-weights shape's (a tiny variant:
    its table entry's); for a checkpoint video-llava-7b for Video-LLaVA, qwen2.5-vl-7b for Qwen2.5-VL,
    llava-next-7b where anyres, else llava-v1.5-7b."""
    from llava.model.language_model.video_llava import is_video_llava

    if args.random_weights:
        return table_model(args.random_weights)
    if is_video_llava(args.model_path):
        return "video-llava-7b"
    path = Path(args.model_path) / "config.json"
    fields = json.loads(path.read_text()) if path.is_file() else {}
    if fields.get("model_type") == "qwen2_5_vl":
        return "qwen2.5-vl-7b"
    return "llava-next-7b" if fields.get("image_aspect_ratio") == "anyres" else "llava-v1.5-7b"


def load_model(args: argparse.Namespace):
    """The pruning-aware model: random weights of the named shapes, or a real checkpoint; and the inputs'
    processors where the family builds its prompts with them (Qwen2.5-VL: tokenizer, image processor), else None."""
    from llava.model.builder import load_pretrained_model

    dtype = DTYPES[args.dtype]
    vision_dtype = DTYPES[args.vision_dtype or args.dtype]
    if model_family(args) == "qwen2.5-vl-7b":
        if args.vision_dtype or args.vision_tower:
            raise ValueError("--vision-dtype / --vision-tower do not apply to Qwen2.5-VL (its tower is in the "
                             "checkpoint, in --dtype)")
        path = args.model_path or random_qwen_path(args.random_weights, args.device)
        tokenizer, model, image_processor, _ = load_pretrained_model(str(path), device=args.device, dtype=dtype,
                                                                     attn_implementation=args.attn)
        return model, (tokenizer, image_processor)
    if args.random_weights:
        from llava.model.random_weights import random_llava

        return random_llava(args.random_weights, dtype, args.device, args.attn, vision_dtype,
                            merge_type=args.merge_type), None
    from llava.model.visiondrop_llava import PruningCLIPVisionTower, PruningVideoTower, VisionDropLlavaForCausalLM

    _, model, _, _ = load_pretrained_model(
        args.model_path, device=args.device, dtype=dtype, attn_implementation=args.attn,
        vision_tower=args.vision_tower, vision_dtype=vision_dtype, tower_cls=PruningCLIPVisionTower,
        model_cls=VisionDropLlavaForCausalLM, video_tower_cls=PruningVideoTower)
    if args.merge_type:
        if not is_anyres(model.config):
            raise ValueError(f"--merge-type: {args.model_path} is not an anyres (LLaVA-NeXT) checkpoint")
        if "unpad" in args.merge_type and not hasattr(model.model, "image_newline"):
            raise ValueError(f"--merge-type {args.merge_type}: the checkpoint has no image_newline")
        model.config.mm_patch_merge_type = args.merge_type
    return model, None


def load_configs(paths: list[str], family: str = "llava-v1.5-7b") -> list[tuple[str, str, PruningConfig]]:
    """(key, label, config) for the family's unpruned reference and every distinct path, reference first, then in
    the order given (the measuring order: with --time-budget, put the configs that matter most first)."""
    out, seen = [], set()
    for path in [str(REPO / REFERENCES[family]), *paths]:
        resolved = Path(path).resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        cfg = load_config(resolved)
        if cfg.model != family:
            raise ValueError(f"{path} targets {cfg.model}, but this run measures {family}")
        if resolved.is_relative_to(REPO):
            cfg.source = str(resolved.relative_to(REPO))  # no machine paths in the results
        key = f"{resolved.parent.name}/{resolved.stem}"
        label = cfg.method if cfg.method == "none" or cfg.budget is None else f"{cfg.method} {cfg.budget:g}"
        if cfg.method != "none" and cfg.budget_ratio is not None:  # Qwen2.5-VL: a share of the image's tokens
            label = f"{cfg.method} {100 * cfg.budget_ratio:.1f}%"
        out.append((key, label, cfg))
    labels = [label for _, label, _ in out]
    return [(k, k if labels.count(label) > 1 else label, c) for k, label, c in out]


def display_order(configs: list[tuple[str, str, PruningConfig]]) -> list[str]:
    """Config keys for the tables: the reference, then by method (first appearance) and budget, largest first."""
    methods = list(dict.fromkeys(c.method for _, _, c in configs))
    rest = sorted(configs[1:], key=lambda e: (methods.index(e[2].method), -(e[2].budget or 0)))
    return [configs[0][0], *(k for k, _, _ in rest)]


def environment(args: argparse.Namespace) -> dict:
    """Device, driver, CUDA and library versions, dtype, attention backend and mode (docs/efficiency.md, 'Protocol')."""
    cuda = args.device.startswith("cuda")
    env = {"gpu": torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()})",
           "driver": _driver_version() if cuda else None, "cuda": torch.version.cuda if cuda else None,
           "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "dtype": args.dtype, "vision_dtype": args.vision_dtype or args.dtype,
           "attention": args.attn,
           "mode": MODES[args.graphs]}
    return env


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def image_description(model, inputs: BenchInputs) -> str:
    """The image each sample carries, as the report states it."""
    if hasattr(model, "vl_config"):  # Qwen2.5-VL
        t, h, w = inputs.images["image_grid_thw"][0].tolist()
        merge = model.vl_config.vision_config.spatial_merge_size
        return (f"one {QWEN_IMAGE_SIZE[0]}x{QWEN_IMAGE_SIZE[1]} image: {w}x{h} patches of 14 px ({t} temporal), "
                f"{h * w // merge**2} merged tokens, in the chat prompt")
    tower = sample_tower(model)
    side = tower.config.image_size
    if hasattr(tower, "num_frames"):
        return f"one clip of {tower.num_frames} {side}x{side} frames, video tower: {tower.label}"
    if not is_anyres(model.config):
        return f"one {side}x{side} view"
    w, h = NEXT_IMAGE_SIZE
    merge = model.config.mm_patch_merge_type
    return (f"one {w}x{h} anyres image: {anyres_crops(model.config, NEXT_IMAGE_SIZE, side)} sub-images of "
            f"{side}x{side} through the ViT, merge {merge} (encoder-stage methods: multi-crop layout)")


class Bench:
    """Runs the cells of one model and keeps the record (results are appended as they are measured)."""

    def __init__(self, args: argparse.Namespace, model, processors, configs, t0: float):
        self.args, self.model, self.processors, self.configs, self.t0 = args, model, processors, configs, t0
        self.timer = SectionTimer(args.device)
        model.attach_timer(self.timer)
        self.plan = Plan([*args.gen, GQA_TOKENS], args.warmup, args.repeats, args.decode_repeats)
        max_repeats = self.plan.repeats if args.max_repeats is None else args.max_repeats
        self.max_plan = Plan(self.plan.points, self.plan.warmup if args.max_warmup is None else args.max_warmup,
                             max_repeats, min(self.plan.decode_repeats, max_repeats))
        sample = self.inputs(1)
        if hasattr(model, "vl_config"):  # Qwen2.5-VL: the tower's patches of the image; every merged token projected
            patches = int(sample.images["image_grid_thw"][0].prod())
            self.shapes = from_qwen_config(model.vl_config, patches)
            self.unit_tokens = patches // model.vl_config.vision_config.spatial_merge_size ** 2
        else:
            tower = sample_tower(model)
            frames = tower.num_frames if getattr(tower, "temporal", False) else 0  # Video-LLaVA's temporal attention
            self.shapes = from_configs(model.config, tower.config, model.config.mm_projector_type, frames)
            self.unit_tokens = getattr(tower, "tokens_per_frame", None) or tower.num_patches  # projected per unit
        self.known_fit: dict[str, int] = {}
        self.hf = None  # transformers' reference model, built on first use (shares our tensors)
        self.weight_bytes = decode_weight_bytes(model)
        model_name = Path(args.model_path).name if args.model_path else f"random-weights {args.random_weights}"
        anyres = is_anyres(model.config)
        self.record = {
            "environment": environment(args),
            "settings": {
                "model": model_name, "image": image_description(model, sample),
                "merge_type": model.config.mm_patch_merge_type if anyres else None,
                "batch_labels": args.batch_labels, "text_tokens": args.text_tokens, "gen_tokens": args.gen,
                "e2e_points": self.plan.points, "warmup": args.warmup, "repeats": args.repeats,
                "decode_repeats": self.plan.decode_repeats, "max_warmup": self.max_plan.warmup,
                "max_repeats": self.max_plan.repeats, "max_decode_repeats": self.max_plan.decode_repeats,
                "image_position": args.image_position, "peak_hbm_tbs": args.peak_hbm_tbs,
                "peak_tflops": args.peak_tflops, "llm_weight_bytes": self.weight_bytes,
                "max_batch_cap": args.max_batch_cap, "max_batch_step": args.max_batch_step,
                "timing": "CUDA events (device time) + host wall clock" if self.timer.cuda else "perf_counter"},
            "reference": configs[0][0],
            "display_order": display_order(configs),
            "configs": [{"key": k, "label": lab, **cfg.to_dict()} for k, lab, cfg in configs],
            "results": [], "cuda_graph_prefill": []}

    def inputs(self, batch: int):
        a = self.args
        return make_inputs(self.model, batch, a.text_tokens, a.image_position, processors=self.processors)

    def fits(self, batch: int) -> bool:
        """Whether one run with the longest G fits in memory at this batch."""
        try:
            run_trial(self.model, self.inputs(batch), self.plan.long, self.timer, cuda_graph=self.args.graphs)
            ok = True
        except RuntimeError as err:
            if not is_oom(err):
                raise
            ok = False
        self.release()
        return ok

    def try_measure(self, batch: int, plan: Plan) -> dict | None:
        """`measure` at this batch, or None on out-of-memory."""
        try:
            result = measure(self.model, self.inputs(batch), plan, self.timer, self.args.graphs)
        except RuntimeError as err:
            if not is_oom(err):
                raise
            result = None
        self.release()
        return result

    def release(self) -> None:
        """Free the decode graphs' static KV buffers and the cached device memory (between runs and cells)."""
        self.model.decode_graphs.clear()
        free_memory()

    def cell(self, key: str, label: str, cfg: PruningConfig, batch_label: str) -> dict:
        """Measure one (config, batch) cell; OOM is a status, not a failure."""
        self.model.set_pruning(cfg)
        base = {"config": key, "label": label, "method": cfg.method, "batch_label": batch_label}
        if batch_label == "max":
            batch = find_max_batch(self.fits, self.known_fit.get(key, 0), self.args.max_batch_cap,
                                   self.args.max_batch_step)
            base["max_batch_search"] = {"found": batch, "cap": self.args.max_batch_cap}
        else:
            batch = int(batch_label)
        result = None
        for _ in range(3 if batch_label == "max" else 1):  # at 'max', step down if fragmentation bites
            plan = self.max_plan if batch_label == "max" else self.plan
            if batch < 1 or (result := self.try_measure(batch, plan)) is not None:
                break
            batch -= self.args.max_batch_step
        if result is None:
            return {**base, "batch": batch, "status": "OOM"}
        if batch_label != "max":
            self.known_fit[key] = max(self.known_fit.get(key, 0), batch)
        counts = result["visual_per_layer"]
        bytes_per_elem = torch.empty(0, dtype=self.model.dtype).element_size()
        result.update(analytic(self.shapes, cfg, self.args.text_tokens, counts, batch, bytes_per_elem,
                               result["n_crops"], result["projected_tokens"]))
        result["average_visual_tokens"] = sum(counts) / len(counts)
        return self.finish({**base, "status": "ok", **result})

    def finish(self, result: dict) -> dict:
        """Throughput and the physical-limit fractions of a measured cell."""
        result["throughput"] = throughput(result)
        result["physical"] = physical_limits(result, self.weight_bytes, self.args.peak_hbm_tbs, self.args.peak_tflops)
        return result

    def reference_cell(self, batch_label: str) -> dict:
        """transformers' own LLaVA class on the same weights, unpruned, its plain `generate` (not at 'max')."""
        base = {"config": TRANSFORMERS, "label": "transformers generate", "method": "transformers",
                "batch_label": batch_label}
        if self.over_budget():
            return {**base, "status": "skipped (time budget)"}
        try:
            if self.hf is None:
                self.hf = reference_model(self.model)
            inputs = self.inputs(int(batch_label))
            batch = reference_inputs(self.hf, inputs.input_ids, inputs.images, inputs.image_sizes)
            plan = self.plan
            result = measure_reference(self.hf, batch, plan.points, plan.warmup, plan.repeats, plan.decode_repeats)
        except Exception as err:
            traceback.print_exc()
            free_memory()
            return {**base, "status": f"error: {type(err).__name__}: {err}"[:200]}
        free_memory()
        n_layers = len(self.model.model.layers)
        n = result.pop("n_visual")
        bytes_per_elem = torch.empty(0, dtype=self.model.dtype).element_size()
        none = load_config(REPO / REFERENCES[model_family(self.args)])
        llm, vision, projector = self.shapes  # transformers' Video-LLaVA tower has no temporal attention
        result.update(analytic((llm, replace(vision, frames=0), projector), none, self.args.text_tokens,
                               [n] * n_layers, int(batch_label), bytes_per_elem, inputs.n_crops,
                               inputs.n_crops * self.unit_tokens))
        return self.finish({**base, "status": "ok", "batch": int(batch_label), "n_crops": inputs.n_crops,
                            "visual_per_layer": [n] * n_layers,
                            "average_visual_tokens": float(n), "kv_allocated_bytes": None, **result})

    def graph_cells(self) -> None:
        """Eager vs CUDA-graph prefill layers at batch 1, per config with measured counts."""
        for key, label, _ in self.configs:
            counts = next((r["visual_per_layer"] for r in self.record["results"]
                           if r["config"] == key and r["status"] == "ok"), None)
            if counts is None or self.over_budget():
                continue
            entry = {"config": key, "label": label}
            try:
                entry.update(graph_prefill(self.model, counts, self.args.text_tokens, self.args.warmup,
                                           self.args.repeats))
            except Exception as err:  # optional comparison: keep the main results whatever happens
                entry["error"] = f"{type(err).__name__}: {err}"[:300]
            free_memory()
            self.record["cuda_graph_prefill"].append(entry)
            self.write()

    def write(self) -> None:
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        add_ratios(self.record["results"], self.record["reference"])
        add_transformers_ratios(self.record["results"])
        (out / "efficiency.json").write_text(json.dumps(self.record, indent=2))
        (out / "efficiency.md").write_text(markdown(self.record))

    def over_budget(self) -> bool:
        return bool(self.args.time_budget) and time.monotonic() - self.t0 > self.args.time_budget

    def run_cell(self, key: str, label: str, cfg: PruningConfig, batch_label: str) -> dict:
        """One cell, or its status: skipped by the time budget, or an error (one broken method must not cost
        the other cells)."""
        base = {"config": key, "label": label, "method": cfg.method, "batch_label": batch_label}
        if self.over_budget():
            return {**base, "status": "skipped (time budget)"}
        try:
            return self.cell(key, label, cfg, batch_label)
        except Exception as err:
            traceback.print_exc()
            free_memory()
            return {**base, "status": f"error: {type(err).__name__}: {err}"[:200]}

    def run(self) -> None:
        """All cells, batch label by batch label (unpruned first); the CUDA-graph comparison after the first."""
        bar = tqdm(total=len(self.args.batch_labels) * len(self.configs), desc="efficiency", unit="cell")
        for n, batch_label in enumerate(self.args.batch_labels):
            for key, label, cfg in self.configs:
                self.record["results"].append(self.run_cell(key, label, cfg, batch_label))
                self.write()
                bar.update()
            if not self.args.no_transformers and batch_label != "max":
                self.record["results"].append(self.reference_cell(batch_label))
                self.write()
            if n == 0 and self.args.cuda_graph_prefill and self.timer.cuda:
                self.graph_cells()
        bar.close()
        self.record["elapsed_s"] = time.monotonic() - self.t0
        self.write()


def main(argv: list[str] | None = None) -> None:
    t0 = time.monotonic()
    args = parse_args(argv)
    configs = load_configs(args.configs, model_family(args))
    model, processors = load_model(args)
    if args.graphs is None:  # the model's own default (generate(cuda_graph=None))
        args.graphs = fast_path_applies(model)
    elif args.graphs and not model.supports_fast_path:
        raise SystemExit(f"--cuda-graph-decode: {type(model).__name__} has no CUDA-graph path (it runs eager)")
    free_memory()
    Bench(args, model, processors, configs, t0).run()
    print((Path(args.out) / "efficiency.md").read_text())


if __name__ == "__main__":
    main()
