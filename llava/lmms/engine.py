"""lmms-eval requests on this repository's generation engine (`llava.eval.generation`), without importing
lmms-eval: request -> prompt, batches grouped by generation settings (longest first), stop strings,
multi-round generation and continuation log-likelihoods. The lmms-eval model class (`llava.lmms.model`) is a
thin adapter over these functions, so they are tested without lmms-eval installed."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.conversation import build_prompt, conv_templates
from llava.eval.generation import generate_queries
from llava.eval.prompts import pixel_inputs
from llava.mm_utils import tokenizer_image_token

DEFAULT_MAX_NEW_TOKENS = 128
# generation_kwargs that carry no setting for this engine (lmms-eval's LLaVA wrapper ignores them too)
IGNORED_GEN_KWARGS = {"image_aspect_ratio", "do_sample", "use_cache", "image_sizes"}


@dataclass
class Query:
    """One user turn: text with at most one `<image>` placeholder, and its PIL image (None: text only)."""

    text: str
    image: Any = None


def make_query(context: str, visuals: Any, where: str = "request") -> Query:
    """The user turn of an lmms-eval request: `<image>\\n` + context when the request has an image (as LLaVA's
    drivers and lmms-eval's own LLaVA wrapper write it), images converted to RGB as the LLaVA drivers do."""
    images = [v for v in _flatten(visuals) if v is not None]
    if len(images) > 1:
        raise ValueError(f"{where}: {len(images)} images in one request; the LLaVA-1.5/NeXT models here take "
                         "one image per request (single-image tasks only)")
    if not images:
        if DEFAULT_IMAGE_TOKEN in context:
            raise ValueError(f"{where}: the context has an {DEFAULT_IMAGE_TOKEN} placeholder but no image")
        return Query(context)
    image = images[0]
    if not hasattr(image, "convert"):
        raise ValueError(f"{where}: visual of type {type(image).__name__} is not an image (videos and audio "
                         "are not supported)")
    text = context if DEFAULT_IMAGE_TOKEN in context else f"{DEFAULT_IMAGE_TOKEN}\n{context}"
    return Query(text, image.convert("RGB"))


def _flatten(visuals: Any) -> list:
    if visuals is None:
        return []
    if isinstance(visuals, (list, tuple)):
        return [x for v in visuals for x in _flatten(v)]
    return [visuals]


def generation_args(base: argparse.Namespace, gen_kwargs: dict) -> tuple[argparse.Namespace, list[str]]:
    """Engine settings for one lmms-eval `generation_kwargs` (max_new_tokens, temperature, top_p, num_beams;
    greedy by default) and its stop strings (`until`)."""
    kwargs = {k: v for k, v in gen_kwargs.items() if k not in IGNORED_GEN_KWARGS}
    until = kwargs.pop("until", [])
    until = [until] if isinstance(until, str) else list(until or [])
    if int(kwargs.pop("num_beams", 1) or 1) != 1:
        raise ValueError(f"generation_kwargs num_beams={gen_kwargs['num_beams']}: only 1 (greedy / sampling) "
                         "is supported")
    args = argparse.Namespace(**vars(base))
    args.max_new_tokens = int(kwargs.pop("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
    args.temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
    args.top_p = kwargs.pop("top_p", None)
    if kwargs:
        raise ValueError(f"generation_kwargs {sorted(kwargs)} are not supported by visiondrop_llava (supported: "
                         "until, max_new_tokens, temperature, top_p, num_beams=1)")
    return args, until


def cut_at_stops(text: str, until: Sequence[str]) -> str:
    """The text before the first stop string (empty stop strings ignored), as lmms-eval's API asks."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


def plan_batches(keys: Sequence[str], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Request indices in batches of at most `batch_size`: requests with equal keys (generation settings)
    together, longest first within a key so padding stays small; keys in first-seen order."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    batches = []
    for members in groups.values():
        members.sort(key=lambda i: -lengths[i])
        batches += [members[first:first + batch_size] for first in range(0, len(members), batch_size)]
    return batches


def settings_key(gen_kwargs: dict) -> str:
    """A grouping key of a generation_kwargs dict (requests with equal keys can share a batch)."""
    return json.dumps(gen_kwargs, sort_keys=True, default=str)


def generate(queries: Sequence[Query], gen_kwargs: Sequence[dict], base: argparse.Namespace, tok, model,
             image_processor: int, batch_size: int, on_batch: Callable[[list[int], list[tuple]], None] | None = None
             ) -> list[tuple[str, list[int]]]:
    """[(answer, per-layer visual tokens)] of every query, in query order, generated in batches with
    `generate_queries` (the engine of the LLaVA drivers); `on_batch(indices, results)` after each batch."""
    keys = [settings_key(g) for g in gen_kwargs]
    results: list[tuple[str, list[int]] | None] = [None] * len(queries)
    for batch in plan_batches(keys, [len(q.text) for q in queries], batch_size):
        args, until = generation_args(base, gen_kwargs[batch[0]])
        pil = [queries[i].image for i in batch if queries[i].image is not None]
        out = generate_queries([queries[i].text for i in batch], pil, tok, model, image_processor, args)
        out = [(cut_at_stops(text, until), layers) for text, layers in out]
        for i, result in zip(batch, out):
            results[i] = result
        if on_batch is not None:
            on_batch(batch, out)
    return results


NextRound = Callable[[list[str], int, Any], tuple]


def generate_multi_round(first: Sequence[Query], gen_kwargs: Sequence[dict], next_round: Sequence[NextRound],
                         run: Callable[[list[int], list[Query], list[dict]], list[str]]) -> list[list[str]]:
    """lmms-eval's multi-round protocol: round 0 answers `first`; then `next_round[i](previous answers,
    round index, previous round info)` returns (visuals, context, terminal, previous answers, info) and the
    request stops at `terminal`. Each round's live requests are answered together by
    `run(request indices, queries, generation_kwargs)`."""
    answers: list[list[str]] = [[] for _ in first]
    info: list[Any] = [None] * len(first)
    live, queries, round_idx = list(range(len(first))), list(first), 0
    while live:
        for i, text in zip(live, run(live, queries, [gen_kwargs[i] for i in live])):
            answers[i].append(text)
        round_idx += 1
        still, queries = [], []
        for i in live:
            visuals, context, terminal, previous, info[i] = next_round[i](list(answers[i]), round_idx, info[i])
            if previous is not None:
                answers[i] = list(previous)
            if not terminal:
                still.append(i)
                queries.append(make_query(context, visuals, f"round {round_idx}"))
        live = still
    return answers


def prompt_with_answer(query: str, answer: str, conv_mode: str) -> str:
    """The conversation prompt with the assistant turn filled in (closing separator included)."""
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], query)
    conv.append_message(conv.roles[1], answer)
    return conv.get_prompt()


def continuation_tokens(query: Query, continuation: str, tok, conv_mode: str) -> tuple[torch.Tensor, int]:
    """(ids of the prompt with `continuation` as the assistant reply, number of scored tokens at its end).

    Scored are the reply and the template's closing separator (`</s>` for vicuna_v1), as lmms-eval's LLaVA
    wrapper scores them."""
    context = tokenizer_image_token(build_prompt(query.text, conv_mode), tok, return_tensors="pt")
    full = tokenizer_image_token(prompt_with_answer(query.text, continuation, conv_mode), tok, return_tensors="pt")
    if not continuation:
        return context, 0
    if len(full) <= len(context) or not torch.equal(full[:len(context)], context):
        raise ValueError(f"continuation {continuation!r}: its tokens do not extend the prompt's tokens")
    return full, len(full) - len(context)


@torch.no_grad()
def loglikelihood(query: Query, continuation: str, tok, model, image_processor: int, conv_mode: str
                  ) -> tuple[float, bool, list[int]]:
    """(sum of log-probabilities of the continuation's tokens, whether greedy decoding yields them,
    per-layer visual tokens) from one forward pass of the (pruned) model."""
    ids, n = continuation_tokens(query, continuation, tok, conv_mode)
    images, sizes = pixel_inputs([query.image] if query.image is not None else [], model, image_processor)
    logits = model(ids[None].to(model.device), images=images, image_sizes=sizes)[0]
    per_layer = [int(v) for v in model.last_stats.visual_per_layer[:, 0].tolist()]
    if n == 0:
        return 0.0, True, per_layer
    # visual tokens (pruned or not) all precede the reply, so the last n+1 positions are the reply's
    scores = logits[-n - 1:-1].float().log_softmax(dim=-1)
    target = ids[-n:].to(scores.device)
    logprob = scores.gather(-1, target[:, None]).sum()
    return float(logprob), bool((scores.argmax(dim=-1) == target).all()), per_layer
