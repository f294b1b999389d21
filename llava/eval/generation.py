"""Shared answer-generation engine of the LLaVA drivers: batched greedy generation, resume, chunks, answer lines.

Resume: an answer is identified by (question_id, prompt) — MME and TextVQA repeat question ids, and the prompt
is the question-file text the answer line records. Keys are counted as a multiset, so even a file with
repeated (id, prompt) pairs resumes by occurrence. Answers are appended and flushed after every batch, in
question-file order; a crash loses at most the batch in flight (a torn last line is dropped on restart).
Next to each answer file `<answers>.run.json` records the settings that change answers (model, pruning
config, prompt template, generation settings, dtype); resuming with other settings is an error.
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
from typing import Any

import torch
from tqdm import tqdm

from llava.conversation import build_prompt
from llava.eval.questions import EvalInputError, EvalItem, answer_key, get_chunk
from llava.eval.record import COMPARED_SETTINGS, run_file_for
from llava.mm_utils import load_image, process_images, tokenizer_image_token
from llava.model.visiondrop_llava import load_model_for_eval, official_flags_to_overrides
from visiondrop.config import ConfigError, load_config

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_MODEL_CACHE: dict[tuple, tuple] = {}


def add_common_args(ap: argparse.ArgumentParser, max_new_tokens: int) -> None:
    """Model, pruning-config, generation and run options shared by every driver."""
    g = ap.add_argument_group("model")
    g.add_argument("--model-path", required=True, help="local LLaVA checkpoint directory")
    g.add_argument("--vision-tower", default=None, help="local CLIP directory (overrides mm_vision_tower)")
    g.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cuda, cuda:1, cpu")
    g.add_argument("--dtype", default="auto", choices=("auto", *DTYPES), help="auto: float16 on GPU, float32 on CPU")
    g.add_argument("--attn-implementation", default="sdpa", help="sdpa (default), flash_attention_2, eager")
    g = ap.add_argument_group("pruning config")
    g.add_argument("--config", default=None, help="pruning config YAML (default: unpruned)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    g.add_argument("--dominant", type=int, default=None, help="released flag: encoder.dominant")
    g.add_argument("--contextual", type=int, default=None, help="released flag: encoder.contextual")
    g.add_argument("--layer_list", default=None, help="released flag: llm.layers, e.g. [8,16,24]")
    g.add_argument("--image_token_list", default=None, help="released flag: llm.tokens, e.g. [[61,9],[45,7],[33,5]]")
    g = ap.add_argument_group("generation")
    g.add_argument("--conv-mode", default="vicuna_v1")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the reproduction setting)")
    g.add_argument("--top_p", type=float, default=None)
    g.add_argument("--num_beams", type=int, default=1, help="only 1 (greedy / sampling) is supported")
    g.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    fast = g.add_mutually_exclusive_group()
    fast.add_argument("--eager-decode", action="store_true",
                      help="the eager path (default on CUDA fp16/bf16: ViT, prefill segments and decode steps "
                           "replayed from CUDA graphs; same answers up to floating-point summation order)")
    fast.add_argument("--cuda-graph-decode", action="store_true",
                      help="force the CUDA-graph path (already the default where it applies)")
    g = ap.add_argument_group("run")
    g.add_argument("--answers-file", required=True, help="answer JSONL (appended to; resumable)")
    g.add_argument("--batch-size", type=int, default=1)
    g.add_argument("--num-chunks", type=int, default=1)
    g.add_argument("--chunk-idx", type=int, default=0)


def model_name_from_path(model_path: str) -> str:
    """Reference `get_model_name_from_path`: last folder name (`parent_checkpoint-N` for checkpoints)."""
    parts = str(model_path).strip("/").split("/")
    return f"{parts[-2]}_{parts[-1]}" if parts[-1].startswith("checkpoint-") and len(parts) > 1 else parts[-1]


def resolve_device_dtype(device: str, dtype: str) -> tuple[str, torch.dtype]:
    """'auto' -> cuda when available else cpu; dtype 'auto' -> float16 on GPU, float32 on CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        return device, torch.float32 if device == "cpu" else torch.float16
    return device, DTYPES[dtype]


def run_settings(args: argparse.Namespace):
    """(validated pruning config, the answer-changing settings recorded next to the answer file)."""
    overrides = official_flags_to_overrides(args.dominant, args.contextual, args.layer_list, args.image_token_list)
    config = load_config(args.config, overrides + list(args.set))
    _, dtype = resolve_device_dtype(args.device, args.dtype)
    pruning = config.to_dict()
    pruning.pop("source", None)
    settings = {"model_id": model_name_from_path(args.model_path), "model_path": str(args.model_path),
                "config_file": config.source, "pruning": pruning, "conv_mode": args.conv_mode,
                "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
                "dtype": str(dtype).replace("torch.", ""), "eager_decode": args.eager_decode}
    return config, settings


def load_for_args(args: argparse.Namespace, config):
    """(tokenizer, model, image_size) with `config` installed; the loaded model is cached across calls."""
    device, dtype = resolve_device_dtype(args.device, args.dtype)
    key = (str(args.model_path), device, dtype, args.attn_implementation, args.vision_tower)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()
        tok, model, vision_cfg, _ = load_model_for_eval(
            str(args.model_path), config, dtype=dtype, device=device,
            attn_implementation=args.attn_implementation, vision_tower=args.vision_tower)
        _MODEL_CACHE[key] = (tok, model, vision_cfg.image_size)
    tok, model, image_size = _MODEL_CACHE[key]
    model.set_pruning(config)
    if getattr(model.config, "mm_use_im_start_end", False):
        raise NotImplementedError("checkpoints with mm_use_im_start_end=true are not supported")
    return tok, model, image_size


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
    info = {"settings": settings, "runs": []}
    if resuming and run_file.is_file():
        info = json.loads(run_file.read_text())
    old = info.get("settings", {})
    diff = [k for k in COMPARED_SETTINGS if k in old and old[k] != settings[k]]
    if diff:
        raise EvalInputError(f"answer file {answers_file} was written with different {', '.join(diff)} "
                             f"(see {run_file}); use another answer file / RUN_NAME, or delete both to start over")
    info["settings"] = settings
    return info


def open_image(item: EvalItem):
    """PIL image of an item (file or base64), RGB-converted when its driver does so."""
    if item.image_file is not None:
        return load_image(item.image_file, convert_rgb=item.convert_rgb)
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(base64.b64decode(item.image_b64)))
        image.load()
    except Exception as err:  # binascii.Error, PIL.UnidentifiedImageError, OSError
        raise ValueError(f"cannot decode the base64 image ({type(err).__name__}: {err})") from err
    return image.convert("RGB") if item.convert_rgb else image


def generate_batch(batch: list[EvalItem], tok, model, image_size: int, args: argparse.Namespace) -> list[tuple]:
    """Greedy (or sampled) answers for a batch: [(text, per-layer visual token counts)] in batch order."""
    ids = [tokenizer_image_token(build_prompt(item.query, args.conv_mode), tok, return_tensors="pt")
           for item in batch]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    input_ids = torch.full((len(ids), max(len(x) for x in ids)), pad, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, x in enumerate(ids):
        input_ids[row, :len(x)], mask[row, :len(x)] = x, 1
    pil = []
    for item in batch:
        if item.has_image:
            try:
                pil.append(open_image(item))
            except (OSError, ValueError) as err:
                raise EvalInputError(f"{item.where}: {err}") from err
    images, sizes = None, None
    if pil:
        aspect = getattr(model.config, "image_aspect_ratio", None)
        images = process_images(pil, aspect, image_size, getattr(model.config, "image_grid_pinpoints", None))
        sizes = [im.size for im in pil]
        cast = {"device": model.device, "dtype": model.dtype}  # fp16 pixels as the reference drivers pass them
        images = [im.to(**cast) for im in images] if isinstance(images, list) else images.to(**cast)
    out = model.generate(input_ids.to(model.device), images=images, image_sizes=sizes,
                         attention_mask=mask.to(model.device), max_new_tokens=args.max_new_tokens,
                         do_sample=args.temperature > 0, temperature=args.temperature, top_p=args.top_p,
                         eos_token_id=tok.eos_token_id, pad_token_id=pad,
                         cuda_graph=False if args.eager_decode else (True if args.cuda_graph_decode else None))
    per_layer = model.last_stats.visual_per_layer.cpu()
    results = []
    for row in range(len(batch)):
        tokens = out[row].tolist()
        if tok.eos_token_id in tokens:
            tokens = tokens[:tokens.index(tok.eos_token_id)]
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


def run(args: argparse.Namespace, read_items: Callable[[], list[EvalItem]]) -> dict[str, Any]:
    """Generate the missing answers of this chunk into args.answers_file; return a summary."""
    if args.num_beams != 1:
        raise EvalInputError("--num_beams > 1 is not supported (the reproduction protocol is greedy, 1 beam)")
    if args.batch_size < 1:
        raise EvalInputError("--batch-size must be >= 1")
    chunk = get_chunk(read_items(), args.num_chunks, args.chunk_idx)
    path = Path(args.answers_file)
    run_file = run_file_for(path)
    existing = read_answers(path)
    config, settings = run_settings(args)
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
    if pending:
        tok, model, image_size = load_for_args(args, config)
        path.parent.mkdir(parents=True, exist_ok=True)
        start, started = time.perf_counter(), _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        bar = tqdm(total=len(chunk), initial=summary["existing"], desc=path.name, dynamic_ncols=True)
        try:
            with path.open("a", encoding="utf-8") as f:
                for first in range(0, len(pending), args.batch_size):
                    batch = pending[first:first + args.batch_size]
                    results = generate_batch(batch, tok, model, image_size, args)
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
                                 "torch": torch.__version__})
            run_file.write_text(json.dumps(info, indent=2) + "\n")
    print(f"{path}: {summary['new']} new answers, {summary['existing']} already present "
          f"(chunk {args.chunk_idx + 1}/{args.num_chunks}: {summary['chunk']} questions)")
    return summary


def cli(args: argparse.Namespace, read_items: Callable[[], list[EvalItem]]) -> int:
    """Run a driver; bad input is reported as one clear line on stderr with exit status 2."""
    try:
        run(args, read_items)
    except (EvalInputError, ConfigError, FileNotFoundError, NotImplementedError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
