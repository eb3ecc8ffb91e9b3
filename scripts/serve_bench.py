"""Time a running or freshly started `starcli serve`: the client's first token on a small file,
questions about an encoded long document, and concurrent clients. Prints a table last.

    python scripts/serve_bench.py --tokens 30000 [--start "--device cpu"] [--clients 8]

The long document is this repository's text repeated to about --tokens tokens, with one numbered
fact per client put at spread places; each client asks for its own fact, and an answer is right
when it holds that fact's code. Figures come from the client's side of the socket.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def start_server(extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "starcli", "serve", "--port", "0", *shlex.split(extra)],
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    while True:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit(f"the server did not start (exit {proc.wait()})")
        print(line, end="", file=sys.stderr)
        found = re.search(r"on (http://\S+) ", line)
        if found:
            return proc, found.group(1)


def filler_text() -> str:
    parts = []
    for path in sorted((ROOT / "starcli").rglob("*.py")) + sorted((ROOT / "docs").glob("*.md")):
        parts.append(f"=== {path.relative_to(ROOT)} ===\n{path.read_text()}")
    return "\n".join(parts)


def needle_document(tokens: int, facts: int) -> tuple[str, list[str]]:
    """About ``tokens`` tokens of repository text (at about 4 characters a token) with ``facts``
    numbered codes spread through it."""
    text = filler_text()
    want = int(tokens * 4.0)
    body = (text * (want // len(text) + 1))[:want]
    codes = [f"{7000 + 37 * i}-{chr(65 + i % 26)}{chr(75 + i % 13)}" for i in range(facts)]
    pieces, step = [], len(body) // (facts + 1)
    for i, code in enumerate(codes):
        pieces.append(body[i * step:(i + 1) * step])
        pieces.append(f"\nNOTE: the access code of vault number {i + 1} is {code}.\n")
    pieces.append(body[facts * step:])
    return "".join(pieces), codes


def streamed_ask(url: str, path: str, body: dict) -> dict:
    """POST a streamed ask; returns the first token's time, the answer and the result."""
    start = time.perf_counter()
    first, text, result = None, [], None
    with httpx.stream("POST", url + path, json=body, timeout=None) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line:
                continue
            message = json.loads(line)
            if message["type"] == "token":
                first = first or time.perf_counter() - start
                text.append(message["text"])
            elif message["type"] == "result":
                result = message["result"]
            elif message["type"] == "error":
                raise SystemExit(f"error: {message['message']}")
    return {"first_s": first, "answer": "".join(text), "result": result, "total_s": time.perf_counter() - start}


def cli_first_token(url: str | None, question: str, runs: int) -> list[float]:
    """Seconds from starting `starcli ask` (``--server url``, or in its own process with url None)
    to its first byte on stdout, on a small file."""
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "small.txt"
        small.write_text("The retry logic lives in net/retry.py and backs off exponentially.\n")
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            where = ["--server", url] if url else []
            proc = subprocess.Popen([sys.executable, "-m", "starcli", "ask", str(small), question, *where, "--quiet"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
            proc.stdout.read(1)
            times.append(time.perf_counter() - start)
            proc.stdout.read()
            proc.wait()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--start", default="", help="start a server with these serve options")
    parser.add_argument("--tokens", type=int, default=30000)
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--clients", type=int, default=0)
    parser.add_argument("--small-runs", type=int, default=3)
    parser.add_argument("--compare-local", action="store_true", help="also time `starcli ask` without the server")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()
    proc = None
    url = args.url
    if not url:
        proc, url = start_server(args.start)
    rows = []
    try:
        if args.small_runs:
            times = cli_first_token(url, "Where is the retry logic?", args.small_runs)
            rows.append(("`starcli ask --server`, small file: first token (process start to first byte)",
                         " / ".join(f"{t:.2f}" for t in times) + " s"))
            if args.compare_local:
                times = cli_first_token(None, "Where is the retry logic?", args.small_runs)
                rows.append(("`starcli ask` in its own process, same file: first token",
                             " / ".join(f"{t:.2f}" for t in times) + " s"))
        facts = max(args.clients, args.questions)
        text, codes = needle_document(args.tokens, facts)
        start = time.perf_counter()
        posted = httpx.post(url + "/v1/documents", json={"text": text}, timeout=None).json()
        rows.append((f"POST /v1/documents: {posted['tokens']} tokens, {posted['blocks']} blocks (phase 1)",
                     f"{time.perf_counter() - start:.2f} s"))
        settings = {"temperature": 0, "max_new_tokens": args.max_new_tokens}
        path = f"/v1/documents/{posted['id']}/ask"
        alone = []  # each question asked by itself, one after another: what concurrent answers must equal
        for i in range(facts):
            asked = streamed_ask(url, path, {"questions": [f"What is the access code of vault number {i + 1}?"],
                                             "settings": settings})
            alone.append(asked["answer"])
            right = codes[i] in asked["answer"]
            print(f"question {i + 1}: expected {codes[i]}, answered {asked['answer']!r}", file=sys.stderr)
            if i < args.questions:
                rows.append((f"question {i + 1} on the encoded document: first token ({'right' if right else 'WRONG'})",
                             f"{asked['first_s']:.3f} s (server: {asked['result']['answers'][0]['time_to_first_token_s']:.3f} s)"))
        if args.clients:
            def one(i: int) -> dict:
                return streamed_ask(url, path, {"questions": [f"What is the access code of vault number {i + 1}?"],
                                                "settings": settings})

            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
                answers = list(pool.map(one, range(args.clients)))
            wall = time.perf_counter() - start
            right = sum(codes[i] in a["answer"] for i, a in enumerate(answers))
            for i, a in enumerate(answers):
                print(f"client {i + 1}: expected {codes[i]}, answered {a['answer']!r}", file=sys.stderr)
            tokens = sum(a["result"]["answers"][0]["answer_tokens"] for a in answers)
            firsts = sorted(a["first_s"] for a in answers)
            same = sum(a["answer"] == alone[i] for i, a in enumerate(answers))
            rows.append((f"{args.clients} concurrent clients: answers equal to the same question asked alone",
                         f"{same}/{args.clients}"))
            rows.append((f"{args.clients} concurrent clients: right answers (the model's retrieval)", f"{right}/{args.clients}"))
            rows.append((f"{args.clients} concurrent clients: wall, answer tokens, throughput",
                         f"{wall:.2f} s, {tokens} tokens, {tokens / wall:.1f} tokens/s, {args.clients / wall:.2f} answers/s"))
            rows.append((f"{args.clients} concurrent clients: first token min / median / max",
                         f"{firsts[0]:.2f} / {firsts[len(firsts) // 2]:.2f} / {firsts[-1]:.2f} s"))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    print("\n| what | figure |\n| --- | --- |")
    for what, figure in rows:
        print(f"| {what} | {figure} |")


if __name__ == "__main__":
    os.environ.setdefault("NO_COLOR", "1")
    main()
