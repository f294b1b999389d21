"""Timed runs of the generation path (docs/efficiency.md, 'Protocol'): ViT / selection / prefill / decode split, TTFT,
end-to-end time for a fixed number of generated tokens, KV bytes allocated, peak memory, largest batch."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers.cache_utils import DynamicCache

from benchmarks.qwen_inputs import qwen_inputs
from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import get_anyres_image_grid_shape
from llava.model import decoding
from llava.model.graph_decode import StaticKV
from visiondrop.timing import SectionTimer

# docs/efficiency.md, 'Protocol': a 2x2 grid, 5 sub-images (2928 tokens unpadded, 2880 flat)
NEXT_IMAGE_SIZE = (672, 672)


@dataclass
class BenchInputs:
    """A fixed batch: `text_tokens` random ids per row around one image placeholder (Video-LLaVA: one per frame),
    and random pixels ([B, 3, S, S]; for anyres one [1 + g, 3, S, S] crop stack per row, with the original
    `image_sizes`; for Video-LLaVA clips [B, 3, T, S, S]; for Qwen2.5-VL a chat prompt with the image's
    `<|image_pad|>` run and the image processor's output, benchmarks.qwen_inputs)."""

    input_ids: torch.Tensor
    images: torch.Tensor | list[torch.Tensor] | Mapping
    image_sizes: list[tuple[int, int]] | None = None

    @property
    def batch(self) -> int:
        return self.input_ids.shape[0]

    @property
    def n_crops(self) -> int:
        """Sub-images (Video-LLaVA: frames) per sample that go through the vision tower (Qwen2.5-VL: its image)."""
        if isinstance(self.images, Mapping):
            return len(self.images["image_grid_thw"]) // self.batch
        if isinstance(self.images, torch.Tensor):
            return self.images.shape[2] if self.images.dim() == 5 else 1
        return self.images[0].shape[0]


def sample_tower(model):
    """The tower that encodes the benchmark's samples: Video-LLaVA's video tower (clips), else the vision tower."""
    return getattr(model, "video_tower", None) or model.get_vision_tower()


def projector(model) -> torch.nn.Module:
    """The module that maps tower features to the LLM width: LLaVA's mm_projector, Qwen2.5-VL's PatchMerger."""
    visual = getattr(model.model, "visual", None)
    return model.model.mm_projector if visual is None else visual.merger


def anyres_crops(config, image_size: tuple[int, int], side: int) -> int:
    """Sub-images (base + grid crops) of an image of original size (w, h) under the config's pinpoints."""
    g_w, g_h = get_anyres_image_grid_shape(image_size, config.image_grid_pinpoints, side)
    return 1 + g_w * g_h


def make_inputs(model, batch: int, text_tokens: int, image_position: int = 35, seed: int = 0,
                processors: tuple | None = None) -> BenchInputs:
    """Identical rows (no padding): `image_position` text ids, the placeholder, the remaining text ids.
    An anyres (NeXT) model gets one 672x672 image per row: its 5 sub-images as random pixels; Video-LLaVA one
    clip of its tower's frames (8 adjacent placeholders). Qwen2.5-VL (`processors`: its tokenizer and image
    processor) one 1344x1008 image in its chat prompt (`image_position` does not apply: the template places it)."""
    if processors is not None:
        return BenchInputs(*qwen_inputs(model, *processors, batch, text_tokens, seed))
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (text_tokens,), generator=g)
    cut = min(image_position, text_tokens)
    tower = sample_tower(model)
    frames = getattr(tower, "num_frames", None)
    row = torch.cat([ids[:cut], torch.full((frames or 1,), IMAGE_TOKEN_INDEX), ids[cut:]])
    input_ids = row.expand(batch, -1).to(model.device).contiguous()
    size = tower.config.image_size
    if frames:
        clip = torch.randn(1, 3, frames, size, size, generator=g)
        return BenchInputs(input_ids, clip.expand(batch, -1, -1, -1, -1).to(model.device, tower.dtype).contiguous())
    if getattr(model.config, "image_aspect_ratio", None) == "anyres":
        n_sub = anyres_crops(model.config, NEXT_IMAGE_SIZE, size)
        crops = torch.randn(n_sub, 3, size, size, generator=g).to(model.device, tower.dtype)
        return BenchInputs(input_ids, [crops] * batch, [NEXT_IMAGE_SIZE] * batch)
    pixels = torch.randn(1, 3, size, size, generator=g)
    return BenchInputs(input_ids, pixels.expand(batch, -1, -1, -1).to(model.device, tower.dtype).contiguous())


def cache_bytes(cache: DynamicCache | StaticKV | None) -> int:
    """Bytes held by the key and value tensors of every layer of a cache (a static cache: its buffers; none
    without a cache: a one-token generation keeps no keys)."""
    if cache is None:
        return 0
    if isinstance(cache, StaticKV):
        pairs = cache.buffers.values()
    else:
        pairs = [(layer.keys, layer.values) for layer in cache.layers]
    return sum(t.numel() * t.element_size() for pair in pairs for t in pair if t is not None)


def generate_timed(model, inputs: BenchInputs, n_tokens: int, timer: SectionTimer,
                   on_prefill: Callable[[DynamicCache | StaticKV | None], None] | None = None,
                   cuda_graph: bool = False) -> torch.Tensor:
    """`model.generate(min_new_tokens=max_new_tokens=n_tokens, cuda_graph=cuda_graph)` (greedy, EOS ignored,
    cached decode; `cuda_graph`: ViT, prefill segments and decode steps graph-replayed where they apply) with a
    timer mark at the start and, from generate's own token loop, after every generated token. Returns the tokens
    [B, n]."""
    timer.mark()
    return decoding.generate(model, inputs.input_ids, inputs.images, inputs.image_sizes,
                             max_new_tokens=n_tokens, min_new_tokens=n_tokens, use_cache=True,
                             cuda_graph=cuda_graph, on_prefill=on_prefill, on_token=lambda token: timer.mark())


@dataclass
class Trial:
    """One run: section totals, and device / host ms from the start to token k (k = 1..n)."""

    sections: dict[str, float]
    device_ms: list[float]
    wall_ms: list[float]


def run_trial(model, inputs: BenchInputs, n_tokens: int, timer: SectionTimer, on_prefill=None,
              cuda_graph: bool = False) -> Trial:
    """One timed generation of exactly `n_tokens` tokens (decode steps graph-replayed with `cuda_graph`)."""
    timer.reset()
    generate_timed(model, inputs, n_tokens, timer, on_prefill, cuda_graph)
    device_ms, wall_ms = timer.marks_ms()
    return Trial(timer.sections_ms(), device_ms, wall_ms)


@dataclass
class Plan:
    """Token counts and repetitions: the first `decode_repeats` timed runs generate `long` tokens, the rest
    `short` (enough for every end-to-end point below `long`); warm-up runs generate `short` (at least 2)."""

    points: list[int]
    warmup: int = 5
    repeats: int = 20
    decode_repeats: int | None = None
    long: int = field(init=False)
    short: int = field(init=False)

    def __post_init__(self):
        self.points = sorted(set(self.points))
        self.long = self.points[-1]
        self.short = max([p for p in self.points if p < self.long] + [min(2, self.long)])
        if self.decode_repeats is None:
            self.decode_repeats = self.repeats

    def tokens(self, timed_index: int) -> int:
        return self.long if timed_index < self.decode_repeats else self.short


def summary(values: list[float]) -> dict[str, float] | None:
    """Median, p10, p90 and count of a list of measurements (None when empty)."""
    if not values:
        return None
    p10, med, p90 = np.percentile(np.asarray(values, dtype=float), [10, 50, 90])
    return {"median": float(med), "p10": float(p10), "p90": float(p90), "n": len(values)}


def split_trials(trials: list[Trial], plan: Plan) -> dict:
    """Per-part latency summaries: ViT, selection, prefill, decode per token, TTFT, e2e per G (docs/efficiency.md,
    'Protocol')."""
    parts: dict[str, list[float]] = {k: [] for k in ("vit", "select", "prefill", "ttft", "decode_per_token")}
    e2e = {g: [] for g in plan.points}
    wall = {g: [] for g in plan.points}
    for t in trials:
        s = t.sections
        parts["vit"].append(s.get("vit", 0.0) - s.get("select_encoder", 0.0))
        parts["select"].append(s.get("select_encoder", 0.0) + s.get("select_llm", 0.0))
        parts["prefill"].append(t.device_ms[0] - s.get("vit", 0.0) - s.get("select_llm", 0.0))
        parts["ttft"].append(t.device_ms[0])
        if len(t.device_ms) == plan.long > 1:
            parts["decode_per_token"].append((t.device_ms[-1] - t.device_ms[0]) / (plan.long - 1))
        for g in plan.points:
            if len(t.device_ms) >= g:
                e2e[g].append(t.device_ms[g - 1])
                wall[g].append(t.wall_ms[g - 1])
    out = {k: summary(v) for k, v in parts.items()}
    out["e2e"] = {str(g): summary(v) for g, v in e2e.items()}
    out["e2e_wall"] = {str(g): summary(v) for g, v in wall.items()}
    return out


@contextmanager
def counting_projected(model, seen: dict) -> Iterator[None]:
    """Add the number of tokens going through the projector to `seen["projected_rows"]` while open."""
    def hook(module, args, output) -> None:
        seen["projected_rows"] = seen.get("projected_rows", 0) + output.shape[:-1].numel()

    handle = projector(model).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def measure(model, inputs: BenchInputs, plan: Plan, timer: SectionTimer, cuda_graph: bool = False) -> dict:
    """Warm up, then time `plan.repeats` runs; the first run also reads the KV cache, the projected tokens and
    (the last run) the token counts. `cuda_graph`: decode steps replayed from CUDA graphs (captured in warm-up)."""
    seen: dict = {}

    def inspect(cache) -> None:
        seen["kv_allocated_bytes"] = cache_bytes(cache)

    def trial(n_tokens: int) -> Trial:
        if "kv_allocated_bytes" in seen:
            return run_trial(model, inputs, n_tokens, timer, cuda_graph=cuda_graph)
        with counting_projected(model, seen):
            return run_trial(model, inputs, n_tokens, timer, inspect, cuda_graph)

    cuda = inputs.input_ids.device.type == "cuda"
    for n in range(plan.warmup):  # both lengths: graphs are captured on a shape's second use
        trial(plan.short)
        if n < 2 and plan.long != plan.short:
            trial(plan.long)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    trials = [trial(plan.tokens(i)) for i in range(plan.repeats)]
    per_layer = model.last_stats.visual_per_layer
    return {
        "batch": inputs.batch,
        "n_crops": inputs.n_crops,
        "projected_tokens": seen["projected_rows"] // inputs.batch,
        "visual_per_layer": per_layer[:, 0].tolist(),
        "uniform_across_batch": bool((per_layer == per_layer[:, :1]).all()),
        "kv_allocated_bytes": seen["kv_allocated_bytes"],
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "latency_ms": split_trials(trials, plan),
    }


def is_oom(err: BaseException) -> bool:
    """True for a CUDA out-of-memory error."""
    text = str(err)
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in text or "ALLOC_FAILED" in text


def free_memory() -> None:
    """Release cached device memory between cells (and after an OOM)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def find_max_batch(fits: Callable[[int], bool], known: int, cap: int, step: int = 8) -> int:
    """Largest batch <= cap with fits(batch): double from `known` (a batch known to fit, 0 if none) until a
    failure or the cap, then bisect until the bracket is at most `step` wide. 0 when nothing fits."""
    lo, hi = min(known, cap), None
    b = min(max(2 * lo, 1), cap)
    while lo < cap:
        if not fits(b):
            hi = b
            break
        lo, b = b, min(2 * b, cap)
    if hi is None:
        return lo
    while hi - lo > max(step, 1):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
