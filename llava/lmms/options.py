"""The plugin's model arguments and process placement, without lmms-eval: model_args -> the LLaVA drivers'
options, the run label of the sidecar, and each data-parallel process's rank and device."""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import torch

from llava.eval.generation import add_common_args


def engine_args(pretrained: str, config: str | None, overrides: str | None, device: str, dtype: str,
                attn_implementation: str, vision_tower: str | None, conv_template: str,
                cuda_graph: bool | None) -> argparse.Namespace:
    """The LLaVA drivers' options for these model arguments (parsed by the drivers' own parser); `cuda_graph`
    None = the drivers' default (the CUDA-graph path where it applies), False = eager, True = forced."""
    argv = ["--model-path", str(pretrained), "--answers-file", "-", "--device", device, "--dtype", dtype,
            "--attn-implementation", attn_implementation, "--conv-mode", conv_template]
    if config:
        argv += ["--config", str(config)]
    for item in str(overrides or "").split(";"):
        if item.strip():
            argv += ["--set", item.strip()]
    if vision_tower:
        argv += ["--vision-tower", str(vision_tower)]
    if cuda_graph is not None:
        argv.append("--cuda-graph-decode" if cuda_graph else "--eager-decode")
    parser = argparse.ArgumentParser(prog="visiondrop_llava", exit_on_error=False)
    add_common_args(parser, max_new_tokens=128)
    try:
        return parser.parse_args(argv)
    except argparse.ArgumentError as err:
        raise ValueError(f"visiondrop_llava model_args: {err}") from None


def run_label(method: str, config_file: str, overrides: list[str]) -> str:
    """`<method>_<config file stem>` (as the benchmark scripts name runs), `+<hash>` when overrides are set."""
    label = f"{method}_{Path(config_file).stem}" if config_file else method
    if overrides:
        label += "+" + hashlib.sha1(";".join(overrides).encode()).hexdigest()[:8]
    return label


def process_position(accelerator=None, environ=os.environ) -> tuple[int, int, int]:
    """(global rank, host-local rank, world size) of this process: the RANK / LOCAL_RANK / WORLD_SIZE that
    `accelerate launch` and torchrun set (the ones lmms-eval shards documents by), else the accelerator's."""
    rank = environ.get("RANK", accelerator.process_index if accelerator is not None else 0)
    local = environ.get("LOCAL_RANK", accelerator.local_process_index if accelerator is not None else 0)
    world = environ.get("WORLD_SIZE", accelerator.num_processes if accelerator is not None else 1)
    return int(rank), int(local), int(world)


def device_for_process(device: str, local_rank: int, world_size: int) -> str:
    """The device of one data-parallel process: its host-local GPU (`cuda:<local rank>`) when several processes
    run and `device` is auto or a CUDA device (CPU when no GPU is present), else `device` itself."""
    if world_size > 1 and (device == "auto" or device.startswith("cuda")):
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    return device
