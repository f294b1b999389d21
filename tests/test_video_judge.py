"""The judge client against a real chat-completions server on 127.0.0.1 (good, malformed, 429 and hanging
replies): scores, re-asks, retries, resume after a killed run, no repeated requests for judged ids."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llava.eval.video_judge import SYSTEM_PROMPT, load_qa_pairs, main, parse_reply

ROOT = Path(__file__).resolve().parents[1]


class FakeJudge:
    """Replies chosen by the question text: 'yes-N' / 'no-N' (score N), 'bad-once', 'bad-always', 'busy' (one 429),
    'hang' (blocks until released, once)."""

    def __init__(self):
        self.requests: list[str] = []
        self.hanging = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    return self.send(404, {"error": "not found"})
                assert body["messages"][0]["content"] == SYSTEM_PROMPT
                question = re.search(r"Question: (.*)\n", body["messages"][1]["content"]).group(1)
                with judge.lock:
                    judge.requests.append(question)
                    count = judge.requests.count(question)
                if question.startswith("busy") and count == 1:
                    return self.send(429, {"error": "rate limited"}, {"Retry-After": "0"})
                if question.startswith("hang") and count == 1:
                    judge.hanging.set()
                    judge.release.wait(60)
                verdict, _, score = question.partition("-")
                if question.startswith("bad-always") or (question.startswith("bad-once") and count == 1):
                    content = "Sure! The answer matches."
                elif question.startswith(("yes", "no")):
                    content = f"{{'pred': '{verdict}', 'score': {score}}}"
                else:
                    content = "{'pred': 'yes', 'score': 3}"
                self.send(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})

            def send(self, code, payload, headers=()):
                data = json.dumps(payload).encode()
                self.send_response(code)
                for k, v in dict(headers).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def judge():
    server = FakeJudge()
    yield server
    server.release.set()
    server.server.shutdown()


def write_preds(path: Path, questions: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"v{i}", "question": q, "answer": "a", "pred": "p"}) + "\n"
                            for i, q in enumerate(questions)))
    return path


def cli(judge: FakeJudge, tmp_path: Path, pred: Path, *extra: str) -> list[str]:
    return ["--pred-file", str(pred), "--output-dir", str(tmp_path / "judged"), "--output-json",
            str(tmp_path / "result.json"), "--api-base", judge.base, "--judge-model", "local-judge",
            "--backoff", "0.01", *extra]


def test_parse_reply_follows_the_original():
    assert parse_reply("{'pred': 'yes', 'score': 4.8}") == ("yes", 4)  # int() truncates
    assert parse_reply(" {'pred': 'No', 'score': '2'} ") == ("no", 2)
    assert parse_reply("{'pred': 'maybe', 'score': 2}") is None
    assert parse_reply("yes, 4") is None and parse_reply("{'pred': 'yes'}") is None


def test_scores_reasks_and_rate_limits(judge, tmp_path):
    pred = write_preds(tmp_path / "pred.jsonl", ["yes-4.8", "no-1", "yes-5", "bad-once", "busy", "bad-always"])
    result = main(cli(judge, tmp_path, pred, "--reasks", "2"))
    assert (result["yes"], result["no"], result["failures"]) == (4, 1, 1)  # bad-once and busy end as yes-3
    assert result["accuracy"] == pytest.approx(80.0)
    assert result["score"] == pytest.approx((4 + 1 + 5 + 3 + 3) / 5)
    assert result["reasks"] == 1 + 2  # bad-once re-asked once, bad-always twice
    assert judge.requests.count("busy") == 2 and judge.requests.count("bad-always") == 3
    assert result["judge"]["model"] == "local-judge" and result["judge"]["endpoint"] == judge.base
    assert json.loads((tmp_path / "result.json").read_text())["judge"]["date"] == result["judge"]["date"]
    main(cli(judge, tmp_path, pred))  # everything judged: a re-run asks nothing
    assert len(judge.requests) == 6 + 1 + 1 + 2


def test_limit_takes_the_first_predictions(judge, tmp_path):
    pred = write_preds(tmp_path / "pred.jsonl", [f"yes-{i % 6}" for i in range(7)])
    result = main(cli(judge, tmp_path, pred, "--limit", "3"))
    assert result["questions"] == 3 and judge.requests == ["yes-0", "yes-1", "yes-2"]


def test_resume_after_kill_asks_no_judged_id_again(judge, tmp_path):
    questions = ["yes-1", "no-2", "yes-3", "hang-x", "yes-5", "no-0"]
    pred = write_preds(tmp_path / "pred.jsonl", questions)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "llava.eval.video_judge", *cli(judge, tmp_path, pred)], env=env)
    try:
        assert judge.hanging.wait(120), "the judge run never reached the hanging question"
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    judged = (tmp_path / "judged" / "judgements.jsonl").read_text().splitlines()
    assert [json.loads(line)["question"] for line in judged] == questions[:3]
    judge.release.set()
    result = main(cli(judge, tmp_path, pred))
    assert result["judged"] == 6 and result["failures"] == 0
    assert {q: judge.requests.count(q) for q in questions} == {**dict.fromkeys(questions, 1), "hang-x": 2}
    lines = (tmp_path / "judged" / "judgements.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == [f"v{i}" for i in range(6)]


def test_refusing_endpoint_and_mixed_judges_are_one_line_errors(judge, tmp_path):
    pred = write_preds(tmp_path / "pred.jsonl", ["yes-1"])
    with pytest.raises(SystemExit, match="HTTP 404"):
        main(cli(judge, tmp_path, pred) + ["--api-base", judge.base + "/wrong", "--retries", "0"])
    main(cli(judge, tmp_path, pred))
    with pytest.raises(SystemExit, match="judged by 'local-judge'"):
        main(cli(judge, tmp_path, pred) + ["--judge-model", "other"])


def test_qa_pairs_by_position(tmp_path):
    q = [{"video_name": f"vid{i}", "question": f"q{i}", "question_id": f"id{i}"} for i in range(5)]
    a = [{"answer": f"a{i}"} for i in range(5)]
    (tmp_path / "test_q.json").write_text(json.dumps(q))
    (tmp_path / "test_a.json").write_text(json.dumps(a))
    pairs = load_qa_pairs(tmp_path / "test_q.json", tmp_path / "test_a.json", limit=3)
    assert [(p["id"], p["video_name"], p["answer"]) for p in pairs] == [("id0", "vid0", "a0"), ("id1", "vid1", "a1"),
                                                                     ("id2", "vid2", "a2")]
    (tmp_path / "test_a.json").write_text(json.dumps([{**x, "question_id": f"id{4 - i}"} for i, x in enumerate(a)]))
    with pytest.raises(ValueError, match="out of order"):
        load_qa_pairs(tmp_path / "test_q.json", tmp_path / "test_a.json")
    (tmp_path / "test_a.json").write_text(json.dumps(a[:4]))
    with pytest.raises(ValueError, match="paired by position"):
        load_qa_pairs(tmp_path / "test_q.json", tmp_path / "test_a.json")
