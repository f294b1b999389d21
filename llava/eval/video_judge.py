"""Video-ChatGPT zero-shot QA judging as Video-LLaVA packages it, on any OpenAI-compatible chat endpoint.

Protocol (Video-LLaVA `eval/video/eval_video_qa.py`): for each prediction the judge LLM gets the system and user
prompts below (their wording is the protocol and is kept verbatim) and must reply with a Python-dict string
`{'pred': 'yes'|'no', 'score': 0-5}`. Accuracy = yes / (yes + no) (a reply counts as yes if its 'pred'
contains "yes", else as no if it contains "no"); score = mean of `int(score)` (4.8 -> 4, as `int()` truncates).
The original used the unpinned `gpt-3.5-turbo` with the server's default sampling; judge versions move the
numbers by several points, so the judge model, endpoint and date go into every result file.

Predictions are Video-LLaVA's JSONL (`id`, `question`, `answer`, `pred`, one object per line); the first
`--limit` (default 1000, the paper's first 1,000 samples per dataset) are judged. Judgements are appended to
`<output-dir>/judgements.jsonl` and flushed one by one: a re-run skips judged ids and never re-asks them.
HTTP errors 429 / 5xx and connection failures are retried with exponential backoff; a reply that does not parse
is re-asked `--reasks` times, then recorded as a failure (counted in the result, left out of both metrics).

    OPENAI_API_BASE=http://localhost:8000/v1 OPENAI_API_KEY=EMPTY JUDGE_MODEL=Qwen/Qwen2.5-72B-Instruct \\
    python -m llava.eval.video_judge --pred-file answers/msvd.jsonl --output-dir judge/msvd --output-json msvd.json
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

DEFAULT_BASE = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-3.5-turbo"
DEFAULT_LIMIT = 1000
JUDGEMENTS = "judgements.jsonl"

SYSTEM_PROMPT = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
    "question-answer pairs. Your task is to compare the predicted answer with the correct answer and determine if "
    "they match meaningfully. Here's how you can accomplish the task:"
    "------"
    "##INSTRUCTIONS: "
    "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the correctness of the prediction compared to the answer."
)
USER_TEMPLATE = (
    "Please evaluate the following video-based question-answer pair:\n\n"
    "Question: {question}\n"
    "Correct Answer: {answer}\n"
    "Predicted Answer: {pred}\n\n"
    "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, with 5 "
    "indicating the highest meaningful match. Please generate the response in the form of a Python dictionary "
    "string with keys 'pred' and 'score', where value of 'pred' is  a string of 'yes' or 'no' and value of 'score' "
    "is in INTEGER, not STRING."
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
    "For example, your response should look like this: {{'pred': 'yes', 'score': 4.8}}."
)


class JudgeError(RuntimeError):
    """The endpoint refused or stayed unreachable; the message is one line."""


@dataclass
class Endpoint:
    """Where and how to ask the judge."""

    base: str
    key: str
    model: str
    temperature: float | None = None
    timeout: float = 120.0
    retries: int = 8
    backoff: float = 2.0

    def ask(self, messages: list[dict]) -> str:
        """POST one chat completion, retrying 429 / 5xx / connection errors; the reply's text ('' if none)."""
        body = {"model": self.model, "messages": messages}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        request = urllib.request.Request(
            self.base.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"})
        last = ""
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read().decode())
                return _reply_text(payload)
            except urllib.error.HTTPError as err:
                if err.code != 429 and err.code < 500:
                    detail = err.read().decode(errors="replace")[:200].replace("\n", " ")
                    raise JudgeError(f"{request.full_url}: HTTP {err.code} ({detail}); check "
                                     "OPENAI_API_BASE, OPENAI_API_KEY and the judge model name") from None
                last, wait = f"HTTP {err.code}", _retry_after(err)
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as err:
                last, wait = f"{err.__class__.__name__}: {err}", None
            if attempt < self.retries:
                time.sleep(wait if wait is not None else self.backoff * 2 ** attempt)
        raise JudgeError(f"{request.full_url}: no answer after {self.retries + 1} tries (last: {last})")


def _retry_after(err: urllib.error.HTTPError) -> float | None:
    """The server's Retry-After in seconds, when it sends a number."""
    value = err.headers.get("Retry-After") if err.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _reply_text(payload: dict) -> str:
    """choices[0].message.content of a chat-completions response, '' when the response has none."""
    try:
        return payload["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        return ""


def parse_reply(text: str) -> tuple[str, int] | None:
    """('yes' | 'no', int score) from a judge reply, or None when it is not the requested dict."""
    try:
        reply = ast.literal_eval(text.strip())
        verdict, score = str(reply["pred"]).lower(), int(reply["score"])
    except (ValueError, SyntaxError, TypeError, KeyError, MemoryError, RecursionError):
        return None
    if "yes" in verdict:
        return "yes", score
    if "no" in verdict:
        return "no", score
    return None


def judge_one(endpoint: Endpoint, sample: dict, reasks: int) -> dict:
    """Ask the judge about one prediction (re-asking malformed replies) and return its judgement record."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": USER_TEMPLATE.format(
                    question=sample["question"], answer=sample["answer"], pred=sample["pred"])}]
    record = {k: sample[k] for k in ("id", "question", "answer", "pred")}
    asks, parsed = 0, None
    while parsed is None and asks <= reasks:
        reply = endpoint.ask(messages)
        asks += 1
        parsed = parse_reply(reply)
    record.update(reply=reply, asks=asks, judge_model=endpoint.model,
                  date=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if parsed is None:
        record["failed"] = True
    else:
        record["verdict"], record["score"] = parsed
    return record


def read_predictions(path: str | Path, limit: int) -> list[dict]:
    """The first `limit` predictions (0 = all) of a Video-LLaVA answer file (JSON or Python-dict lines)."""
    samples, seen = [], set()
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
            except json.JSONDecodeError:
                try:
                    sample = ast.literal_eval(line.strip())
                except (ValueError, SyntaxError):
                    raise ValueError(f"{path}:{number}: not a JSON or Python dict line") from None
            if "pred" not in sample and "text" in sample:  # llava.eval.model_video_qa's LLaVA-style answer line
                sample["pred"] = sample["text"]
            missing = [k for k in ("id", "question", "answer", "pred") if k not in sample]
            if missing:
                raise ValueError(f"{path}:{number}: missing field(s) {missing}; expected id, question, answer, pred")
            if str(sample["id"]) in seen:
                raise ValueError(f"{path}:{number}: duplicate id {sample['id']!r}; merge chunks without repeats")
            seen.add(str(sample["id"]))
            samples.append(sample)
            if limit and len(samples) == limit:
                break
    return samples


def load_qa_pairs(question_file: str | Path, answer_file: str | Path, limit: int = DEFAULT_LIMIT) -> list[dict]:
    """Video-ChatGPT's test_q.json / test_a.json paired by list position: the first `limit` (0 = all) samples."""
    questions, answers = json.loads(Path(question_file).read_text()), json.loads(Path(answer_file).read_text())
    if len(questions) != len(answers):
        raise ValueError(f"{question_file} has {len(questions)} entries but {answer_file} has {len(answers)}; "
                         "they are paired by position, use the two files of one release")
    for position, (q, a) in enumerate(zip(questions, answers)):
        if "question_id" in a and a["question_id"] != q["question_id"]:  # the original does not check this
            raise ValueError(f"{answer_file}[{position}] is question_id {a['question_id']!r} but {question_file}"
                             f"[{position}] is {q['question_id']!r}; the two files are out of order")
    pairs = [{"id": q["question_id"], "video_name": q["video_name"], "question": q["question"],
              "answer": a["answer"]} for q, a in zip(questions, answers)]
    return pairs[:limit] if limit else pairs


def video_question_ids(question_file: str | Path, limit: int = DEFAULT_LIMIT) -> list:
    """The question_ids of the first `limit` (0 = all) entries of a test_q.json: the samples a run answers."""
    questions = json.loads(Path(question_file).read_text())
    chosen = questions[:limit] if limit else questions
    missing = [i for i, q in enumerate(chosen) if not isinstance(q, dict) or "question_id" not in q]
    if missing:
        raise ValueError(f"{question_file}[{missing[0]}] has no question_id (Video-ChatGPT's test_q.json has one "
                         "per entry)")
    return [q["question_id"] for q in chosen]


def read_judgements(path: Path, model: str) -> dict[str, dict]:
    """Judgements already written (a line cut by a kill is dropped from the file), keyed by str(id)."""
    if not path.is_file():
        return {}
    text = path.read_text()
    if text and not text.endswith("\n"):  # killed mid-write: drop the partial line before appending
        text = text[:text.rfind("\n") + 1]
        path.write_text(text)
    done = {}
    for line in text.splitlines():
        record = json.loads(line)
        if record["judge_model"] != model:
            raise ValueError(f"{path} was judged by {record['judge_model']!r}, not {model!r}: use another "
                             "--output-dir or the same --judge-model")
        done[str(record["id"])] = record
    return done


def summarize(records: list[dict]) -> dict:
    """Accuracy (% yes of yes + no), mean score and failure counts over judgement records."""
    judged = [r for r in records if not r.get("failed")]
    yes = sum(r["verdict"] == "yes" for r in judged)
    return {"accuracy": 100.0 * yes / len(judged) if judged else None,
            "score": sum(r["score"] for r in judged) / len(judged) if judged else None,
            "yes": yes, "no": len(judged) - yes, "judged": len(judged),
            "failures": len(records) - len(judged),
            "reasks": sum(r["asks"] - 1 for r in records)}


def run(samples: list[dict], endpoint: Endpoint, output_dir: Path, reasks: int, workers: int) -> list[dict]:
    """Judge every sample not yet in `output_dir`, appending each judgement as it arrives; all records in order."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / JUDGEMENTS
    done = read_judgements(path, endpoint.model)
    todo = [s for s in samples if str(s["id"]) not in done]
    with path.open("a") as out, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(judge_one, endpoint, s, reasks) for s in todo]
        try:
            for future in as_completed(futures):
                record = future.result()
                out.write(json.dumps(record) + "\n")
                out.flush()
                done[str(record["id"])] = record
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return [done[str(s["id"])] for s in samples]


def run_fields(text: str | None) -> dict:
    """The --extra JSON object ({} when not given)."""
    if not text:
        return {}
    fields = json.loads(text)
    if not isinstance(fields, dict):
        raise ValueError("--extra must be a JSON object")
    return fields


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pred-file", required=True, help="Video-LLaVA answers: JSONL with id, question, answer, pred")
    p.add_argument("--output-dir", required=True, help=f"holds {JUDGEMENTS} (append-only, resumable)")
    p.add_argument("--output-json", required=True, help="result: accuracy, score, counts, judge model/endpoint/date")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="judge the first N predictions (0 = all)")
    p.add_argument("--api-base", default=os.environ.get("OPENAI_API_BASE", DEFAULT_BASE))
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", "EMPTY"))
    p.add_argument("--judge-model", default=os.environ.get("JUDGE_MODEL", DEFAULT_MODEL))
    p.add_argument("--temperature", type=float, default=None, help="sent only when given (the original sent none)")
    p.add_argument("--reasks", type=int, default=3, help="re-ask a malformed reply this many times, then fail it")
    p.add_argument("--retries", type=int, default=8, help="HTTP retries on 429 / 5xx / connection errors")
    p.add_argument("--backoff", type=float, default=2.0, help="first retry wait in seconds, doubled each time")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request")
    p.add_argument("--workers", type=int, default=1, help="concurrent requests")
    p.add_argument("--extra", default=None, help="JSON object of run fields merged into the result (the scripts "
                   "pass `python -m llava.eval.record extra`: method, config and its hash, measured visual tokens "
                   "per layer, tower label)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Judge a prediction file and write the result JSON; bad input or a refusing endpoint exits with one line."""
    args = parse_args(argv)
    endpoint = Endpoint(args.api_base, args.api_key, args.judge_model, args.temperature, args.timeout,
                        args.retries, args.backoff)
    try:
        extra = run_fields(args.extra)
        samples = read_predictions(args.pred_file, args.limit)
        records = run(samples, endpoint, Path(args.output_dir), args.reasks, args.workers)
    except (OSError, ValueError, JudgeError) as err:
        sys.exit(f"video_judge: {err}")
    result = {**summarize(records), "questions": len(samples), "limit": args.limit, "pred_file": str(args.pred_file),
              "judge": {"model": args.judge_model, "endpoint": args.api_base,
                        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "first_judgement": min((r["date"] for r in records), default=None)}}
    clash = sorted(set(extra) & set(result))
    if clash:
        sys.exit(f"video_judge: --extra may not set the judge's own fields {clash}")
    result.update(extra)
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"accuracy {result['accuracy']}  score {result['score']}  judged {result['judged']}  "
          f"failures {result['failures']}  judge {args.judge_model} @ {args.api_base}")
    return result


if __name__ == "__main__":
    main()
