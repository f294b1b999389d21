"""Video QA answers (MSVD / MSRVTT / TGIF / ActivityNet-QA) in the command-line shape of Video-LLaVA's
`videollava/eval/video/run_inference_video_qa.py`:

    python -m llava.eval.model_video_qa --model_path CKPT --video_dir DIR --gt_file_question test_q.json
        --gt_file_answers test_a.json --output_dir OUT --output_name 1_0 [--num_chunks K --chunk_idx k]
        [--config CFG.yaml] [--set KEY=VALUE] [--limit 1000]

test_q.json / test_a.json are paired by list position (`video_judge.load_qa_pairs`); the first `--limit`
samples (default 1,000, the paper's protocol; 0 = all) are split into chunks. Each video gives 8 frames
(`video_frames.load_video`), the prompt is `"<image>" * 8 + "\\n" + question` in conv `llava_v1`, greedy,
at most 1024 new tokens. Answers go to `<output_dir>/<output_name>.json`, one JSON line per sample (LLaVA's
answer line: `text` is the prediction, plus `id`, `question`, `answer`), resumable and locked as the image
drivers' (`llava.eval.generation`). A video that is missing or cannot be decoded stops the run with one line
naming it; the answers already written stay and a re-run resumes after them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llava.eval.generation import add_common_args, cli, generate_queries
from llava.eval.questions import EvalInputError, EvalItem
from llava.eval.video_judge import DEFAULT_LIMIT, load_qa_pairs

VIDEO_EXTENSIONS = ("", ".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")  # test_q.json names may lack one
FRAME_PLACEHOLDERS = "<image>" * 8


def build_parser() -> argparse.ArgumentParser:
    """Video-LLaVA's flags; the model / pruning / generation options of the image drivers come after them."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model_path", required=True)
    ap.add_argument("--video_dir", required=True, help="folder of the videos named in --gt_file_question")
    ap.add_argument("--gt_file_question", required=True, help="test_q.json (question_id, video_name, question)")
    ap.add_argument("--gt_file_answers", required=True, help="test_a.json (answer), paired by list position")
    ap.add_argument("--output_dir", required=True)
    ap.add_argument("--output_name", required=True, help="answers go to <output_dir>/<output_name>.json")
    ap.add_argument("--num_chunks", type=int, default=1)
    ap.add_argument("--chunk_idx", type=int, default=0)
    ap.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="the first N samples (0 = all)")
    return ap


def video_file(video_dir: Path, name: str) -> Path:
    """The video `name` in `video_dir`, trying the extensions Video-LLaVA tries; the bare name if none exists."""
    for ext in VIDEO_EXTENSIONS:
        if (video_dir / f"{name}{ext}").is_file():
            return video_dir / f"{name}{ext}"
    return video_dir / name


def read_video_items(args: argparse.Namespace) -> list[EvalItem]:
    """One item per QA pair; the answer line records the id, question and reference answer."""
    try:
        pairs = load_qa_pairs(args.gt_file_question, args.gt_file_answers, args.limit)
    except (OSError, ValueError, KeyError) as err:
        raise EvalInputError(f"QA files {args.gt_file_question} / {args.gt_file_answers}: {err}") from err
    video_dir = Path(args.video_dir)
    return [EvalItem(index=i, question_id=p["id"], prompt=p["question"],
                     query=f"{FRAME_PLACEHOLDERS}\n{p['question']}", where=f"{args.gt_file_question}[{i}]",
                     image_file=video_file(video_dir, p["video_name"]),
                     extra={"id": p["id"], "question": p["question"], "answer": p["answer"]})
            for i, p in enumerate(pairs)]


def generate_video_batch(batch: list[EvalItem], tok, model, image_processor, args) -> list[tuple]:
    """Answers for a batch of video items: 8 frames each, stacked into [n, 3, 8, 224, 224] clips."""
    import torch

    from llava.eval.video_frames import VideoDecodeError, load_video

    clips = []
    for item in batch:
        try:
            clips.append(load_video(item.image_file))
        except (VideoDecodeError, OSError) as err:
            raise EvalInputError(f"{item.where}: {err}") from err
    return generate_queries([item.query for item in batch], torch.stack(clips), tok, model, image_processor, args)


def main(argv: list[str] | None = None) -> int:
    """Generate (or resume) the answers of one chunk."""
    own, rest = build_parser().parse_known_args(argv)
    common = argparse.ArgumentParser()
    add_common_args(common, max_new_tokens=1024)
    output = Path(own.output_dir) / f"{own.output_name}.json"
    args = common.parse_args(["--model-path", own.model_path, "--answers-file", str(output), "--temperature", "0",
                              "--num-chunks", str(own.num_chunks), "--chunk-idx", str(own.chunk_idx), *rest])
    args.gt_file_question, args.gt_file_answers = own.gt_file_question, own.gt_file_answers
    args.video_dir, args.limit = own.video_dir, own.limit
    return cli(args, lambda: read_video_items(args), generate_video_batch)


if __name__ == "__main__":
    sys.exit(main())
