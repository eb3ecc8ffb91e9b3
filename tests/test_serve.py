"""``starcli serve``: the API in this process (the ASGI test client) on a tiny random model, then a
real server process driven by the official ``openai`` client and by ``starcli ask --server``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from starcli import events
from starcli.app.ask import ask
from starcli.app.requests import AskRequest, Placement
from starcli.app.resident import Resident
from starcli.ingest.document import Document, Part
from starcli.run.settings import RunSettings
from starcli.serve.api import Limits, create_app

GREEDY = {"temperature": 0, "max_new_tokens": 8}
DOC_A = "The retry logic lives in net/retry.py and backs off exponentially.\n" * 3
DOC_B = "Authentication is configured in auth/settings.toml with a token lifetime.\n" * 3


def resident_for(model_dir, memory_bytes: int = 2**30) -> Resident:
    return Resident(RunSettings(model=str(model_dir), device="cpu"), Placement(), memory_bytes, events.discard)


@pytest.fixture
def client(tiny_model_dir):
    with TestClient(create_app(resident_for(tiny_model_dir))) as test_client:
        yield test_client


def lines_of(response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def ask_body(text: str, question: str = "where is the retry logic?", **fields) -> dict:
    return {"questions": [question], "document": {"text": text}, "settings": dict(GREEDY), **fields}


def test_a_streamed_answer_is_the_in_process_answer_and_a_second_question_skips_phase_1(client, tiny_model_dir):
    streamed = client.post("/v1/ask", json=ask_body(DOC_A))
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("application/x-ndjson")
    received = lines_of(streamed)
    assert received[-1]["type"] == "result" and sum(m["type"] == "result" for m in received) == 1
    result = received[-1]["result"]
    text = "".join(m["text"] for m in received if m["type"] == "token")
    assert text == result["answers"][0]["answer"] and result["resident"] is True
    assert result["cache"] == {"hit": False}
    request = AskRequest(["-"], ["where is the retry logic?"],
                         RunSettings(model=str(tiny_model_dir), device="cpu", temperature=0, max_new_tokens=8))
    alone = ask(request, events.discard, document=Document([Part("-", DOC_A, "stdin")]))
    assert alone["answers"][0]["answer"] == text  # greedy: the same answer in one process
    for key in ("answers", "attention", "blocks", "document_tokens", "sampling", "phase1_s", "total_s"):
        assert key in result
    again = client.post("/v1/ask", json=ask_body(DOC_A, stream=False)).json()
    assert again["cache"]["hit"] and again["cache"]["memory"]
    assert again["answers"][0]["answer"] == text


def test_documents_are_posted_asked_listed_and_deleted(client):
    posted = client.post("/v1/documents", json={"parts": [{"path": "net/retry.py", "text": DOC_A}]})
    assert posted.status_code == 200
    doc = posted.json()
    assert doc["id"].startswith("doc-") and doc["tokens"] > 100 and doc["blocks"] >= 1 and doc["encoded"]
    assert not doc["cached"]
    assert client.post("/v1/documents", json={"parts": [{"path": "net/retry.py", "text": DOC_A}]}).json()["cached"]
    assert [d["id"] for d in client.get("/v1/documents").json()["data"]] == [doc["id"]]
    answer = client.post(f"/v1/documents/{doc['id']}/ask", json={"questions": ["where?"], "stream": False,
                                                                 "settings": GREEDY}).json()
    assert answer["cache"]["memory"] and answer["answers"][0]["answer_tokens"] >= 1
    assert client.delete(f"/v1/documents/{doc['id']}").json()["deleted"] is True
    gone = client.post(f"/v1/documents/{doc['id']}/ask", json={"questions": ["where?"]})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "document_not_found"


def test_the_least_recently_used_document_is_evicted_beyond_the_memory_budget(tiny_model_dir):
    resident = resident_for(tiny_model_dir, memory_bytes=1)  # room for the newest document only
    with TestClient(create_app(resident)) as client:
        first = client.post("/v1/documents", json={"text": DOC_A}).json()
        client.post("/v1/documents", json={"text": DOC_B})
        assert len(resident.executor.memory.entries) == 1
        again = client.post(f"/v1/documents/{first['id']}/ask", json={"questions": ["where?"], "stream": False,
                                                                    "settings": GREEDY}).json()
        assert again["cache"] == {"hit": False}  # encoded afresh, answered all the same
        assert again["answers"][0]["answer_tokens"] >= 1


def test_chat_completions_in_openai_shapes(client):
    messages = [{"role": "user", "content": DOC_A}, {"role": "user", "content": "where is the retry logic?"}]
    body = {"model": "tiny-model", "messages": messages, "temperature": 0, "max_tokens": 6}
    plain = client.post("/v1/chat/completions", json={**body, "model": None})
    assert plain.status_code == 200, plain.text
    completion = plain.json()
    assert completion["object"] == "chat.completion"
    choice = completion["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
    assert completion["usage"]["completion_tokens"] >= 1
    streamed = client.post("/v1/chat/completions", json={**body, "model": None, "stream": True,
                                                          "stream_options": {"include_usage": True}})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    data = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == choice["message"]["content"]  # greedy, and the document part now kept encoded
    assert chunks[-1]["usage"] == completion["usage"]
    other = client.post("/v1/chat/completions", json={**body, "model": "another-model"})
    assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("content, status, fragment", [
    (b"{not json", 400, "not valid JSON"),
    (b'{"questions": []}', 400, "questions"),
    (b'{"questions": ["q"]}', 400, "document is missing"),
    (b'{"questions": ["q"], "document": {"text": "x"}, "settings": {"colour": 1}}', 400, "unknown settings: colour"),
    (b'{"questions": ["q"], "document": {"text": "x"}, "settings": {"model": "other"}, "stream": false}', 400,
     "this server runs"),
    (b'{"questions": ["q"], "document": {"text": "x"}, "settings": {"temperature": -1}, "stream": false}', 400,
     "temperature"),
])
def test_bad_requests_are_json_errors_and_the_server_goes_on(client, content, status, fragment):
    response = client.post("/v1/ask", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]
    assert client.get("/health").json()["status"] == "ok"


def test_over_the_window_and_oversize_bodies_are_refused(tiny_model_dir):
    with TestClient(create_app(resident_for(tiny_model_dir), Limits(max_body_bytes=50_000))) as client:
        long = client.post("/v1/ask", json=ask_body("word " * 3000, stream=False))
        assert long.status_code == 400 and long.json()["error"]["code"] == "context_length_exceeded"
        big = client.post("/v1/ask", json=ask_body("x" * 60_000))
        assert big.status_code == 413
        chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "word " * 3000}]})
        assert chat.status_code == 400 and "window" in chat.json()["error"]["message"]


def test_the_api_key_is_checked_on_every_request(tiny_model_dir):
    with TestClient(create_app(resident_for(tiny_model_dir), api_key="s3cret")) as client:
        assert client.get("/health").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/health", headers={"x-api-key": "s3cret"}).status_code == 200


def test_a_cancelled_request_stops_at_its_next_token_and_the_next_one_runs(tiny_model_dir):
    from starcli.errors import Cancelled

    resident = resident_for(tiny_model_dir)
    seen = []

    def emit(event):
        if isinstance(event, events.Token):
            seen.append(event.text)

    resident.executor.cancelled = lambda: len(seen) >= 2
    request = AskRequest([], ["where?"], RunSettings(temperature=0, max_new_tokens=40))
    with pytest.raises(Cancelled):
        ask(request, emit, document=Document([Part("-", DOC_A, "stdin")]), resident=resident)
    assert len(seen) == 2
    resident.executor.cancelled = None
    result = ask(request, events.discard, document=Document([Part("-", DOC_A, "stdin")]), resident=resident)
    assert result["answers"][0]["answer_tokens"] == 40 or result["answers"][0]["stop_reason"] != "max new tokens"


# --- a real server process --------------------------------------------------------------------
class Server:
    def __init__(self, model_dir, *extra: str):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "starcli.cli.main", "serve", "--model", str(model_dir), "--device", "cpu",
             "--dtype", "float32", "--port", "0", "--grace", "2", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.log: list[str] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            found = re.search(r"on (http://\S+) ", line)
            if found:
                self.url = found.group(1)
                return
        self.stop()
        raise AssertionError("the server did not start:\n" + "".join(self.log))

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("the server did not stop") from None
        self.log.append(self.proc.stderr.read())
        return code


def starcli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "starcli.cli.main", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def starcli_input(text: str, *args):
    return subprocess.run([sys.executable, "-m", "starcli.cli.main", *map(str, args)], input=text, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "net.txt"
    path.write_text(DOC_A)
    return path


def test_a_server_process_answers_openai_clients_and_starcli_then_stops_on_sigterm(tiny_model_dir, doc):
    from openai import OpenAI

    server = Server(tiny_model_dir)
    try:
        client = OpenAI(base_url=server.url + "/v1", api_key="unused")
        assert [m.id for m in client.models.list()] == [tiny_model_dir.name]
        messages = [{"role": "user", "content": DOC_A}, {"role": "user", "content": "where?"}]
        completion = client.chat.completions.create(model=tiny_model_dir.name, messages=messages, temperature=0,
                                                    max_tokens=6)
        assert completion.usage.completion_tokens >= 1
        pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=tiny_model_dir.name, messages=messages, temperature=0, max_tokens=6, stream=True) if c.choices]
        assert "".join(pieces) == completion.choices[0].message.content

        options = ("--temperature", 0, "--max-new-tokens", 8, "--model", tiny_model_dir, "--json")
        local = starcli("ask", doc, "where is the retry logic?", *options, "--device", "cpu", "--dtype", "float32")
        remote = starcli("ask", doc, "where is the retry logic?", *options, "--server", server.url)
        assert local.returncode == 0 and remote.returncode == 0, remote.stderr
        local_result, remote_result = json.loads(local.stdout), json.loads(remote.stdout)
        assert remote_result["answers"][0]["answer"] == local_result["answers"][0]["answer"]
        assert set(local_result) - set(remote_result) == set()  # the same report, and more
        by_env = starcli("ask", doc, "where is the retry logic?", "--temperature", 0, "--max-new-tokens", 8, "--quiet",
                         env={"STARCLI_SERVER": server.url})
        assert by_env.returncode == 0 and by_env.stdout.strip() == remote_result["answers"][0]["answer"].strip()
        chat_options = ("--temperature", 0, "--max-new-tokens", 6)
        chatted = starcli_input("where?\nand then?\n", "chat", doc, *chat_options, "--server", server.url)
        alone = starcli_input("where?\n", "chat", doc, *chat_options, "--model", tiny_model_dir, "--device", "cpu",
                              "--dtype", "float32")
        assert chatted.returncode == 0 and alone.returncode == 0, chatted.stderr + alone.stderr
        assert chatted.stderr.count("stopped:") == 2 and "Traceback" not in chatted.stderr
        assert chatted.stdout.startswith(alone.stdout)  # the first turn is the same answer
        refused = starcli("ask", doc, "q?", "--server", server.url, "--model", "another-model")
        assert refused.returncode == 2 and "this server runs" in refused.stderr and "Traceback" not in refused.stderr

        # a client that goes away mid-answer: its generation stops, and the next request is served
        body = {"questions": ["write at length"], "document": {"text": DOC_B},
                "settings": {"temperature": 0, "max_new_tokens": 1500}}
        with httpx.stream("POST", server.url + "/v1/ask", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if '"token"' in line:
                    break
        assert client.chat.completions.create(messages=messages, model=tiny_model_dir.name, max_tokens=2).choices
    finally:
        code = server.stop()
    log = "".join(server.log)
    assert code == 0 and "stopped" in log, log
    assert "the client went away" in log and "Traceback" not in log


def test_a_server_needs_an_api_key_off_loopback_and_checks_it(tiny_model_dir, doc):
    refused = starcli("serve", "--model", tiny_model_dir, "--host", "0.0.0.0")
    assert refused.returncode == 2 and "--api-key" in refused.stderr
    server = Server(tiny_model_dir, "--api-key", "s3cret")
    try:
        without = starcli("ask", doc, "q?", "--server", server.url)
        assert without.returncode == 2 and "API key" in without.stderr
        keyed = starcli("ask", doc, "q?", "--server", server.url, "--api-key", "s3cret", "--max-new-tokens", 3)
        assert keyed.returncode == 0, keyed.stderr
    finally:
        assert server.stop(signal.SIGINT) == 0


def test_no_server_at_the_url_is_one_line(doc):
    from starcli.run.launch import free_port

    result = starcli("ask", doc, "q?", "--server", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1 and "cannot reach the server" in result.stderr and "Traceback" not in result.stderr


def test_two_cpu_ranks_stay_alive_between_requests(tiny_model_dir, doc):
    """serve --procs 2: the ranks load once, answer one request after another, and keep documents."""
    server = Server(tiny_model_dir, "--procs", "2")
    try:
        options = ("--temperature", 0, "--max-new-tokens", 6, "--json", "--block-size", 128)
        first = starcli("ask", doc, "where?", *options, "--server", server.url)
        second = starcli("ask", doc, "where?", *options, "--server", server.url)
        assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
        one, two = json.loads(first.stdout), json.loads(second.stdout)
        assert one["ranks"] == 2 and two["cache"]["memory"]
        assert one["answers"][0]["answer"] == two["answers"][0]["answer"]
        local = starcli("ask", doc, "where?", *options, "--model", tiny_model_dir, "--procs", 2, "--device", "cpu",
                        "--dtype", "float32")
        assert local.returncode == 0, local.stderr
        assert json.loads(local.stdout)["answers"][0]["answer"] == one["answers"][0]["answer"]

        # a rank that dies: the request fails in one line, and the server says it must be restarted
        ranks = [pid for pid in descendants(server.proc.pid)
                 if b"starcli.run.worker" in cmdline(pid) and b"torch.distributed.run" not in cmdline(pid)]
        assert len(ranks) == 2
        os.kill(ranks[-1], signal.SIGKILL)
        failed = starcli("ask", doc, "where?", *options, "--server", server.url)
        assert failed.returncode == 1 and "restart the server" in failed.stderr, failed.stderr
        health = httpx.get(server.url + "/health")
        assert health.status_code == 503 and "restart the server" in health.json()["error"]
    finally:
        assert server.stop() == 0
    assert not [pid for pid in ranks if os.path.exists(f"/proc/{pid}")]


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (Linux /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found
