"""`visiondrop_llava`: any checkpoint this repository loads, with any pruning config, as an lmms-eval model.

Model arguments (`--model_args k=v,...`): pretrained (checkpoint directory, required), config (pruning YAML;
default unpruned), set (config overrides, `;`-separated: `set=encoder.dominant=48;llm.layers=[2,6,12]`),
cuda_graph (default: the CUDA-graph path where it applies; false = eager), dtype (auto|float16|bfloat16|
float32), device (auto|cpu|cuda|cuda:N), attn_implementation, vision_tower, conv_template (default vicuna_v1),
record (sidecar path, see `llava.lmms.record`). `--batch_size` and `--device` of lmms-eval's CLI are honoured.
Under `accelerate launch -m lmms_eval` (or torchrun) each process loads one model on its local GPU
(`LOCAL_RANK`) and lmms-eval gives it its share of the documents (`RANK`, `WORLD_SIZE`)."""

from __future__ import annotations

from importlib.metadata import version

from accelerate import Accelerator
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from loguru import logger
from tqdm import tqdm

from llava.eval.generation import load_for_args, run_settings
from llava.lmms.engine import Query, generate, generate_multi_round, loglikelihood, make_query
from llava.lmms.options import device_for_process, engine_args, process_position, run_label
from llava.lmms.record import VisualTokenRecord, record_path
from llava.model.family import LLAVA_FAMILY
from visiondrop.config import ConfigError

DEFAULT_RECORD = "results/lmms/{model}/{config}.rank{rank}.json"


class VisionDropLlava(lmms):
    """LLaVA-1.5 / NeXT checkpoint with a pruning method, answering lmms-eval requests with our engine."""

    is_simple = True

    def __init__(self, pretrained: str, config: str | None = None, set: str | None = None,  # noqa: A002
                 batch_size: int | str = 1, cuda_graph: bool | None = None, device: str | None = None,
                 dtype: str = "auto", attn_implementation: str = "sdpa", vision_tower: str | None = None,
                 conv_template: str = "vicuna_v1", record: str = DEFAULT_RECORD, max_batch_size: int | None = None,
                 **unknown) -> None:
        super().__init__()
        if unknown:
            raise ValueError(f"visiondrop_llava: unknown model_args {sorted(unknown)} (see llava/lmms/model.py)")
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise ValueError(f"visiondrop_llava: batch_size={batch_size!r}; give a positive integer ('auto' is "
                             "not supported)")
        self.accelerator = Accelerator()  # joins the process group of `accelerate launch` / torchrun
        self._rank, local_rank, self._world_size = process_position(self.accelerator)
        device = device_for_process(device or "auto", local_rank, self._world_size)
        self.args = engine_args(pretrained, config, set, device, dtype, attn_implementation, vision_tower,
                                conv_template, cuda_graph)
        try:  # a config that cannot apply to this checkpoint fails here, before any request
            pruning, settings = run_settings(self.args)
            if settings["family"] != LLAVA_FAMILY:  # its log-likelihood prompts are LLaVA's conv template
                raise ValueError(f"the plugin runs LLaVA-family checkpoints; {settings['family']} is not wired yet")
            self._tokenizer, self._model, self.image_processor = load_for_args(self.args, pruning)
        except (ConfigError, FileNotFoundError, NotImplementedError, TypeError, ValueError) as err:
            raise ValueError(f"visiondrop_llava (pretrained={pretrained}, config={config}): {err}") from None
        self.batch_size_per_gpu, self._device = int(batch_size), self._model.device
        label = run_label(pruning.method, pruning.source, list(self.args.set))
        header = {"method": pruning.method, "config": settings["pruning"], "config_file": pruning.source,
                  "overrides": list(self.args.set), "model_id": settings["model_id"],
                  "model_path": settings["model_path"], "conv_mode": settings["conv_mode"],
                  "dtype": settings["dtype"], "eager_decode": settings["eager_decode"],
                  "batch_size": self.batch_size_per_gpu, "rank": self._rank, "world_size": self._world_size,
                  "device": str(self._model.device), "lmms_eval": version("lmms_eval")}
        self.record = VisualTokenRecord(record_path(record, settings["model_id"], label, self._rank), header)
        logger.info(f"visiondrop_llava: {pruning.method} on {settings['model_id']} ({self._model.device}); "
                    f"visual-token record: {self.record.path}")

    @property
    def model(self):
        """The loaded VisionDrop-LLaVA model."""
        return self._model

    @property
    def tokenizer(self):
        """The checkpoint's tokenizer."""
        return self._tokenizer

    @property
    def device(self):
        """The model's device (lmms-eval gathers request counts on it; kept after `clean()` drops the model)."""
        return self._device

    @property
    def batch_size(self) -> int:
        """Requests per generation batch on this process."""
        return self.batch_size_per_gpu

    def _doc(self, task: str, split: str, doc_id: int):
        return self.task_dict[task][split][doc_id]

    def _count(self, indices, out, tasks, request_type: str) -> None:
        for i, (_, per_layer) in zip(indices, out):
            self.record.add(tasks[i], request_type, per_layer)
        self.record.write()

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answers of (context, generation_kwargs, doc_to_visual, doc_id, task, split) requests, batched."""
        args = [r.args for r in requests]
        queries = [make_query(ctx, to_visual(self._doc(task, split, doc_id)), f"{task} doc {doc_id}")
                   for ctx, _, to_visual, doc_id, task, split in args]
        tasks = [a[4] for a in args]
        bar = tqdm(total=len(queries), disable=self._rank != 0, desc="visiondrop_llava")

        def on_batch(indices, out):
            self._count(indices, out, tasks, "generate_until")
            bar.update(len(indices))

        out = generate(queries, [a[1] for a in args], self.args, self._tokenizer, self._model, self.image_processor,
                       self.batch_size_per_gpu, on_batch)
        bar.close()
        return [text for text, _ in out]

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """(sum log p(continuation | context, image), greedy?) of (context, doc_to_target, doc_to_visual, doc_id,
        task, split) requests, one forward pass each. Each pair travels in a GenerationResult: lmms-eval 0.7.3's
        evaluator turns a bare (float, bool) into its string, which its multiple-choice scoring cannot read."""
        results = []
        for ctx, target, to_visual, doc_id, task, split in tqdm([r.args for r in requests],
                                                                disable=self._rank != 0, desc="visiondrop_llava"):
            doc = self._doc(task, split, doc_id)
            continuation = target if isinstance(target, str) else target(doc)
            query = make_query(ctx, to_visual(doc), f"{task} doc {doc_id}")
            logprob, greedy, per_layer = loglikelihood(query, continuation, self._tokenizer, self._model,
                                                       self.image_processor, self.args.conv_mode)
            self.record.add(task, "loglikelihood", per_layer)
            results.append(GenerationResult(text=(logprob, greedy)))
        self.record.write()
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        """Multi-round requests (context, generation_kwargs, doc_to_visual, doc_to_text, doc_id, task, split):
        each round's live requests answered in batches; returns every request's answers, one per round."""
        args = [r.args for r in requests]
        docs = [self._doc(task, split, doc_id) for *_, doc_id, task, split in args]
        first = [make_query(a[0], a[2](doc), f"{a[5]} doc {a[4]}") for a, doc in zip(args, docs)]
        tasks = [a[5] for a in args]
        next_round = [_next_round(a[3], doc) for a, doc in zip(args, docs)]

        def run(live: list[int], queries: list[Query], gen_kwargs: list[dict]) -> list[str]:
            out = generate(queries, gen_kwargs, self.args, self._tokenizer, self._model, self.image_processor,
                           self.batch_size_per_gpu)
            self._count(range(len(live)), out, [tasks[i] for i in live], "generate_until_multi_round")
            return [text for text, _ in out]

        return generate_multi_round(first, [a[1] for a in args], next_round, run)


def _next_round(doc_to_text, doc):
    def step(previous: list[str], round_idx: int, info):
        return doc_to_text(doc, previous_output=previous, round_idx=round_idx, previous_round_info=info)

    return step


