"""Shared answer-generation engine of the LLaVA drivers: batched greedy generation, resume, chunks, answer lines.

Resume: an answer is identified by (question_id, prompt) — MME and TextVQA repeat question ids, and the prompt
is the question-file text the answer line records. Keys are counted as a multiset, so even a file with
repeated (id, prompt) pairs resumes by occurrence. Answers are appended and flushed after every batch, in
question-file order; a crash loses at most the batch in flight (a torn last line is dropped on restart).
Next to each answer file `<answers>.run.json` records the settings that change answers (model, pruning
config, prompt template, generation settings, dtype, code version); resuming with other settings is an error,
`--overwrite` starts the file afresh. While a driver writes, the answer file is locked (`llava.eval.run_guard`).
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import io
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llava.eval.prompts import prompt_batch, prompt_template
from llava.eval.questions import EvalInputError, EvalItem, answer_key, chunk_items
from llava.eval.record import COMPARED_SETTINGS, run_file_for
from llava.eval.run_guard import AnswerLock, RunLockedError, code_version, config_hash, exit_on_sigterm
from llava.eval.scoring.common import overwritten_input
from llava.model.family import QWEN_FAMILY, check_config_family, check_pixel_bounds, checkpoint_family
from visiondrop.config import ConfigError, PruningConfig, load_config

if TYPE_CHECKING:
    import torch

# torch, transformers and the model are imported where they are used, so that `--help` answers at once.
DTYPES = ("float16", "bfloat16", "float32")
_MODEL_CACHE: dict[tuple, tuple] = {}


def add_common_args(ap: argparse.ArgumentParser, max_new_tokens: int, conv_mode: str = "llava_v1") -> None:
    """Model, pruning-config, generation and run options shared by every driver (LLaVA's flags and defaults
    plus this project's)."""
    g = ap.add_argument_group("model")
    g.add_argument("--model-path", required=True, help="local checkpoint directory (LLaVA family or Qwen2.5-VL)")
    g.add_argument("--model-base", default=None, help="base LLM of a LoRA or projector-only checkpoint")
    g.add_argument("--vision-tower", default=None, help="local CLIP directory (overrides mm_vision_tower)")
    g.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cuda, cuda:1, cpu")
    g.add_argument("--dtype", default="auto", choices=("auto", *DTYPES), help="auto: float16 on GPU, float32 on CPU")
    g.add_argument("--attn-implementation", default="sdpa", help="sdpa (default), flash_attention_2, eager")
    g.add_argument("--min-pixels", "--min_pixels", dest="min_pixels", type=int, default=None,
                   help="Qwen2.5-VL only: lower bound of the image processor's dynamic resolution (default: the "
                        "checkpoint's preprocessor_config.json)")
    g.add_argument("--max-pixels", "--max_pixels", dest="max_pixels", type=int, default=None,
                   help="Qwen2.5-VL only: upper bound of the image processor's dynamic resolution")
    g = ap.add_argument_group("pruning config")
    g.add_argument("--config", default=None, help="pruning config YAML (default: the checkpoint family's unpruned one)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    g.add_argument("--dominant", type=int, default=None, help="released flag: encoder.dominant")
    g.add_argument("--contextual", type=int, default=None, help="released flag: encoder.contextual")
    g.add_argument("--layer_list", default=None, help="released flag: llm.layers, e.g. [8,16,24]")
    g.add_argument("--image_token_list", default=None, help="released flag: llm.tokens, e.g. [[61,9],[45,7],[33,5]]")
    g = ap.add_argument_group("generation")
    g.add_argument("--conv-mode", default=conv_mode,
                   help=f"prompt template (default {conv_mode}, as LLaVA's); Qwen2.5-VL uses its chat template")
    g.add_argument("--temperature", type=float, default=0.2,
                   help="sampling temperature (LLaVA's default 0.2); 0 = greedy, the reproduction setting")
    g.add_argument("--top_p", type=float, default=None)
    g.add_argument("--num_beams", type=int, default=1, help="only 1 (greedy / sampling) is supported")
    g.add_argument("--max_new_tokens", "--max-new-tokens", dest="max_new_tokens", type=int, default=max_new_tokens)
    fast = g.add_mutually_exclusive_group()
    fast.add_argument("--eager-decode", action="store_true",
                      help="the eager path (default on CUDA fp16/bf16: ViT, prefill segments and decode steps "
                           "replayed from CUDA graphs; same answers up to floating-point summation order)")
    fast.add_argument("--cuda-graph-decode", action="store_true",
                      help="force the CUDA-graph path (already the default where it applies)")
    g = ap.add_argument_group("run")
    g.add_argument("--answers-file", required=True, help="answer JSONL (appended to; resumable)")
    g.add_argument("--overwrite", action="store_true", help="discard the answers already in --answers-file")
    g.add_argument("--batch-size", type=int, default=1)
    g.add_argument("--num-chunks", type=int, default=1)
    g.add_argument("--chunk-idx", type=int, default=0)


def resolve_device_dtype(device: str, dtype: str) -> tuple[str, torch.dtype]:
    """'auto' -> cuda when available else cpu; dtype 'auto' -> float16 on GPU, float32 on CPU."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        build = "has no CUDA support" if torch.version.cuda is None else "sees no GPU"
        raise EvalInputError(f"--device {device}: this torch ({torch.__version__}) {build}; use --device cpu, "
                             "or a machine / torch build with CUDA")
    if dtype == "auto":
        return device, torch.float32 if device == "cpu" else torch.float16
    return device, getattr(torch, dtype)


def pruning_config(args: argparse.Namespace, family: str | None = None) -> PruningConfig:
    """The run's pruning config: --config (default: the unpruned config of the checkpoint's `family`) with --set
    and the released VisionDrop flags applied; those flags alone select VisionDrop (its defaults for the flags
    left out)."""
    from llava.model.visiondrop_llava import official_flags_to_overrides

    config_file, extra = getattr(args, "config", None), list(getattr(args, "set", None) or [])
    flags = official_flags_to_overrides(*(getattr(args, k, None)
                                          for k in ("dominant", "contextual", "layer_list", "image_token_list")))
    if flags and config_file is None:
        return load_config(None, flags + extra, raw={"method": "visiondrop"})
    if config_file is None and family == QWEN_FAMILY:  # LLaVA's unpruned config is load_config's default
        return load_config(None, extra, raw={"method": "none", "model": QWEN_FAMILY})
    if flags and (method := load_config(config_file).method) != "visiondrop":
        raise ConfigError(f"--dominant / --contextual / --layer_list / --image_token_list are VisionDrop flags, but "
                          f"{config_file} is method {method!r}: drop them or pass a visiondrop config")
    return load_config(config_file, flags + extra)


def run_settings(args: argparse.Namespace):
    """(validated pruning config, the answer-changing settings recorded next to the answer file). The model family
    is read from the checkpoint: a config of another family, and pixel bounds on a family without dynamic resolution,
    are refused here, before anything loads or is written; on Qwen2.5-VL `--conv-mode` is not used (said in one
    line on stderr)."""
    from llava.mm_utils import get_model_name_from_path

    family = checkpoint_family(args.model_path)
    check_pixel_bounds(family, args.min_pixels, args.max_pixels)
    config = pruning_config(args, family)
    check_config_family(config.model, family)
    if family == QWEN_FAMILY:
        print(f"note: {args.model_path} is a Qwen2.5-VL checkpoint: prompts use its chat template, --conv-mode "
              f"{args.conv_mode} is ignored", file=sys.stderr)
    _, dtype = resolve_device_dtype(args.device, args.dtype)
    pruning = config.to_dict()
    pruning.pop("source", None)
    settings = {"model_id": get_model_name_from_path(args.model_path), "model_path": str(args.model_path),
                "family": family, "config_file": config.source, "pruning": pruning,
                "conv_mode": prompt_template(family, args.conv_mode), "min_pixels": args.min_pixels,
                "max_pixels": args.max_pixels, "max_new_tokens": args.max_new_tokens,
                "temperature": args.temperature, "top_p": args.top_p, "dtype": str(dtype).replace("torch.", ""),
                "eager_decode": args.eager_decode, "config_hash": config_hash(pruning), "code_version": code_version()}
    return config, settings


def load_for_args(args: argparse.Namespace, config):
    """(tokenizer, model, image processor) with `config` installed; the loaded model is cached across calls."""
    from llava.model.visiondrop_llava import load_model_for_eval

    device, dtype = resolve_device_dtype(args.device, args.dtype)
    key = (str(args.model_path), args.model_base, device, dtype, args.attn_implementation, args.vision_tower,
           args.min_pixels, args.max_pixels)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()
        tok, model, image_processor, _ = load_model_for_eval(
            str(args.model_path), config, model_base=args.model_base, dtype=dtype, device=device,
            attn_implementation=args.attn_implementation, vision_tower=args.vision_tower,
            min_pixels=args.min_pixels, max_pixels=args.max_pixels)
        _MODEL_CACHE[key] = (tok, model, image_processor)
    tok, model, image_processor = _MODEL_CACHE[key]
    model.set_pruning(config)
    if getattr(model.config, "mm_use_im_start_end", False):
        raise NotImplementedError("checkpoints with mm_use_im_start_end=true are not supported")
    return tok, model, image_processor


def read_answers(path: Path) -> list[dict]:
    """Existing answer lines; a torn (unterminated, unparsable) last line is dropped, any other bad line is an error."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    text = data.decode("utf-8")
    lines = text.split("\n")
    if text and not text.endswith("\n"):
        try:
            json.loads(lines[-1])
            with path.open("a", encoding="utf-8") as f:
                f.write("\n")
        except json.JSONDecodeError:
            keep = data.rfind(b"\n") + 1
            with path.open("r+b") as f:
                f.truncate(keep)
            print(f"warning: {path}: dropped an incomplete last line (interrupted write); it is regenerated",
                  file=sys.stderr)
            lines = lines[:-1]
    answers = []
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise EvalInputError(f"answer file {path} line {line_no}: not valid JSON ({err.msg}); fix or delete "
                                 "that line (the other answers are kept and reused)") from err
        if not isinstance(row, dict) or "question_id" not in row or "prompt" not in row:
            raise EvalInputError(f"answer file {path} line {line_no}: not an answer line (needs question_id, prompt)")
        answers.append(row)
    return answers


def check_settings(run_file: Path, settings: dict, answers_file: Path, resuming: bool) -> dict:
    """Load the sidecar and refuse to resume an answer file written with other answer-changing settings."""
    fix = "rerun with --overwrite to regenerate them, or use another answer file / RUN_NAME"
    if not resuming:
        return {"settings": settings, "runs": []}
    if not run_file.is_file():
        raise EvalInputError(f"answer file {answers_file} has answers but no run record {run_file.name}, so what "
                             f"produced them is unknown; {fix}")
    try:
        info = json.loads(run_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EvalInputError(f"run record {run_file}: not valid JSON ({err}); {fix}") from err
    old = info.get("settings", {}) if isinstance(info, dict) else {}
    diff = [k for k in COMPARED_SETTINGS if old.get(k) != settings[k]]
    if diff:
        raise EvalInputError(f"answer file {answers_file} was written with different {', '.join(diff)} "
                             f"(see {run_file}); {fix}")
    info["settings"] = settings
    return info


def open_image(item: EvalItem):
    """PIL image of an item (file or base64), RGB-converted when its driver does so."""
    from llava.mm_utils import load_image

    if item.image_file is not None:
        return load_image(item.image_file, convert_rgb=item.convert_rgb)
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(base64.b64decode(item.image_b64)))
        image.load()
    except Exception as err:  # binascii.Error, PIL.UnidentifiedImageError, OSError
        raise ValueError(f"cannot decode the base64 image ({type(err).__name__}: {err})") from err
    return image.convert("RGB") if item.convert_rgb else image


def generate_batch(batch: list[EvalItem], tok, model, image_processor, args: argparse.Namespace) -> list[tuple]:
    """Greedy (or sampled) answers for a batch: [(text, per-layer visual token counts)] in batch order."""
    pil = []
    for item in batch:
        if item.has_image:
            try:
                pil.append(open_image(item))
            except (OSError, ValueError) as err:
                raise EvalInputError(f"{item.where}: {err}") from err
    return generate_queries([item.query for item in batch], pil, tok, model, image_processor, args)


def generate_queries(queries: list[str], pil: list, tok, model, image_processor,
                     args: argparse.Namespace) -> list[tuple]:
    """Answers to user turns (`<image>` placeholders in `queries`, one PIL image each, in order) in the model
    family's prompt (`llava.eval.prompts`; args.conv_mode on LLaVA): [(text, per-layer visual token counts)] in
    query order."""
    batch = prompt_batch(queries, pil, tok, model, image_processor, args.conv_mode)
    out = model.generate(batch.input_ids, images=batch.images, image_sizes=batch.image_sizes,
                         attention_mask=batch.attention_mask, max_new_tokens=args.max_new_tokens,
                         do_sample=args.temperature > 0, temperature=args.temperature, top_p=args.top_p,
                         eos_token_id=batch.stop_token_id, pad_token_id=batch.pad_token_id,
                         cuda_graph=False if args.eager_decode else (True if args.cuda_graph_decode else None))
    per_layer = model.last_stats.visual_per_layer.cpu()
    results = []
    for row in range(len(queries)):
        tokens = out[row].tolist()
        if batch.stop_token_id in tokens:
            tokens = tokens[:tokens.index(batch.stop_token_id)]
        text = tok.decode(tokens, skip_special_tokens=True).strip()
        results.append((text, [int(v) for v in per_layer[:, row].tolist()]))
    return results


def answer_line(item: EvalItem, text: str, per_layer: list[int], model_id: str) -> dict:
    """One answer line in the LLaVA format plus measured visual tokens in `metadata`."""
    answer_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{model_id}/{item.index}/{item.question_id}").hex[:22]
    average = sum(per_layer) / len(per_layer) if per_layer else 0.0
    return {"question_id": item.question_id, "prompt": item.prompt, "text": text, **item.extra,
            "answer_id": answer_id, "model_id": model_id,
            "metadata": {"visual_tokens": round(average, 4), "visual_tokens_per_layer": per_layer}}


def run(args: argparse.Namespace, read_items: Callable[[], list[EvalItem]],
        generate: Callable = generate_batch) -> dict[str, Any]:
    """Generate the missing answers of this chunk into args.answers_file with `generate` (a batch of items ->
    [(text, per-layer visual token counts)], as `generate_batch`); return a summary."""
    if args.num_beams != 1:
        raise EvalInputError("--num_beams > 1 is not supported (the reproduction protocol is greedy, 1 beam)")
    if args.batch_size < 1:
        raise EvalInputError("--batch-size must be >= 1")
    path = Path(args.answers_file)
    if path.is_dir():
        raise EvalInputError(f"--answers-file {path} is a folder; give a file path, e.g. {path / 'answers.jsonl'}")
    clash = overwritten_input({"--answers-file": path}, {"--question-file": getattr(args, "question_file", None)})
    if clash:
        raise EvalInputError(clash)
    chunk = chunk_items(read_items(), args.num_chunks, args.chunk_idx)
    config, settings = run_settings(args)
    with AnswerLock(path):
        return run_locked(args, chunk, path, config, settings, generate)


def run_locked(args: argparse.Namespace, chunk: list[EvalItem], path: Path, config, settings: dict,
               generate: Callable = generate_batch) -> dict:
    """`run` once the answer file is locked: check the settings, resume or start afresh, generate."""
    import torch
    from tqdm import tqdm

    run_file = run_file_for(path)
    existing = [] if args.overwrite else read_answers(path)
    info = check_settings(run_file, settings, path, resuming=bool(existing))
    done = Counter(answer_key(a["question_id"], a["prompt"]) for a in existing)
    pending = []
    for item in chunk:
        if done[item.key] > 0:
            done[item.key] -= 1
        else:
            pending.append(item)
    if sum(done.values()):
        print(f"warning: {path}: {sum(done.values())} answer(s) match no question of this chunk", file=sys.stderr)
    missing = [item for item in pending if item.image_file is not None and not item.image_file.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more missing images)" if len(missing) > 1 else ""
        raise EvalInputError(f"{missing[0].where}: image file {missing[0].image_file} not found{more}; put the "
                             "benchmark images in the image folder (see playground/data/README.md)")
    summary = {"answers_file": str(path), "chunk": len(chunk), "existing": len(chunk) - len(pending), "new": 0}
    loaded = load_for_args(args, config) if pending else None  # load errors leave the files as they were
    if args.overwrite or not existing:  # a fresh file (also an empty chunk's, for the merge, as LLaVA's drivers)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        run_file.write_text(json.dumps(info, indent=2) + "\n")
    if loaded:
        tok, model, image_processor = loaded
        start, started = time.perf_counter(), _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        bar = tqdm(total=len(chunk), initial=summary["existing"], desc=path.name, dynamic_ncols=True)
        try:
            with path.open("a", encoding="utf-8") as f:
                for first in range(0, len(pending), args.batch_size):
                    batch = pending[first:first + args.batch_size]
                    results = generate(batch, tok, model, image_processor, args)
                    f.write("".join(json.dumps(answer_line(item, text, layers, settings["model_id"])) + "\n"
                                    for item, (text, layers) in zip(batch, results)))
                    f.flush()
                    os.fsync(f.fileno())
                    summary["new"] += len(batch)
                    bar.update(len(batch))
        finally:
            bar.close()
            info["runs"].append({"started": started, "seconds": round(time.perf_counter() - start, 3),
                                 "new_answers": summary["new"], "device": str(model.device),
                                 "batch_size": args.batch_size, "chunk": [args.chunk_idx, args.num_chunks],
                                 "torch": torch.__version__, "tower": model.tower_label})
            run_file.write_text(json.dumps(info, indent=2) + "\n")
    print(f"{path}: {summary['new']} new answers, {summary['existing']} already present "
          f"(chunk {args.chunk_idx + 1}/{args.num_chunks}: {summary['chunk']} questions)")
    return summary


def cli(args: argparse.Namespace, read_items: Callable[[], list[EvalItem]], generate: Callable = generate_batch) -> int:
    """Run a driver; bad input is reported as one clear line on stderr with exit status 2."""
    from llava.model.checkpoint import CheckpointError

    try:
        with exit_on_sigterm():
            run(args, read_items, generate)
    except (EvalInputError, ConfigError, CheckpointError, FileNotFoundError, NotImplementedError,
            RunLockedError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
