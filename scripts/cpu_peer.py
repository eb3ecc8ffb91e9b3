"""starcli against llama.cpp on the CPU, alternating in one run: time to first token and decode.

    python scripts/cpu_peer.py --model <converted default model folder> --gguf <the same GGUF> \
        --llama-bench <llama.cpp's llama-bench> --out docs/bench/cpu-peer-<date>.jsonl

starcli runs in this process (one session, the default dtype and decode weights; the answer goes
through the engine on every thread, without the session's stop tokens and timed thread choice, so
each run decodes its full 72 tokens like llama-bench's fixed count); llama-bench runs
as a child process with 2 threads, one repetition per call. Each round: llama.cpp's 4K prompt,
starcli's 4K document + 72 greedy tokens, llama.cpp's 32 tokens at depth 4K; then one 16K prompt
each. The document is the repository's own docs, cut to the length.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "\nQuestion: summarize the document above in detail.\nAnswer:"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--llama-bench", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-16k", action="store_true", help="skip the 16K prompts")
    args = parser.parse_args()

    from starcli.run.session import Session
    from starcli.run.settings import RunSettings
    from starcli.star.comm import Comm

    session = Session.load(RunSettings(), args.model, Comm())
    text = "".join((ROOT / "docs" / name).read_text() for name in ("architecture.md", "benchmarks.md", "accuracy.md"))
    document = session.tokenizer(text)["input_ids"]
    question = session.tokenizer(QUESTION)["input_ids"]
    out = open(args.out, "w")  # closed at exit; each row is flushed as it is written

    def log(row: dict) -> None:
        row["utc"] = time.strftime("%H:%M:%S", time.gmtime())
        print(json.dumps(row), flush=True)
        out.write(json.dumps(row) + "\n")
        out.flush()

    def llama(*test: str) -> dict:
        command = [args.llama_bench, "-m", args.gguf, "-t", "2", "-r", "1", "-o", "json", *test]
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)[0]
        return {"tok_s": result["avg_ts"], "seconds": result["avg_ns"] / 1e9}

    def starcli(tokens: int, decode: bool = True) -> dict:
        ids = document[:tokens]
        if len(ids) < tokens:
            raise SystemExit(f"the document has {len(ids)} tokens, fewer than {tokens}")
        start = time.perf_counter()
        session.encode(ids, session.plan(tokens))
        stamps: list[float] = []
        session.engine.answer(question, max_new_tokens=72 if decode else 1,
                              on_token=lambda token: stamps.append(time.perf_counter()) and False)
        row = {"ttft_s": stamps[0] - start, "dtype": session.dtype_name, "int8_decode": session.int8_decode}
        if decode:  # the rate after the first 8 tokens
            row["decode_tok_s"] = (len(stamps) - 9) / (stamps[-1] - stamps[8])
        return row

    for round_ in range(1, args.rounds + 1):
        log({"who": "llama.cpp", "test": "pp4096", "round": round_, **llama("-p", "4096", "-n", "0")})
        log({"who": "starcli", "test": "4096 ttft+decode", "round": round_, **starcli(4096)})
        log({"who": "llama.cpp", "test": "tg32@d4096", "round": round_, **llama("-p", "0", "-n", "32", "-d", "4096")})
    if not args.no_16k:
        log({"who": "llama.cpp", "test": "pp16384", "round": 1, **llama("-p", "16384", "-n", "0")})
        log({"who": "starcli", "test": "16384 ttft", "round": 1, **starcli(16384, decode=False)})


if __name__ == "__main__":
    main()
