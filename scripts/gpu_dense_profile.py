"""Where engine dense loses time against transformers' own forward (one GPU, random weights).

Times, in one process and on the same model and token ids, the time to first token of:
transformers' forward (sdpa, ``logits_to_keep=1``) of document + question, and the engine's dense
phase 1 + question prefill, split into its two parts. Then profiles one of each with
torch.profiler: the top kernels by CUDA time and the CPU time of the whole call.

    python3 scripts/gpu_dense_profile.py --shape qwen2.5-0.5b --lengths 30k,128k --out DIR
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from starcli.model.load import random_model
from starcli.run.session import Session
from starcli.star import attention
from starcli.tools.bench.shapes import SHAPES
from starcli.tools.lengths import parse_lengths


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def hf_ttft(model, ids) -> float:
    model.set_attn_implementation("sdpa")
    try:
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            int(torch.argmax(model(input_ids=ids[None], use_cache=False, logits_to_keep=1).logits[0, -1]).item())
        return time.perf_counter() - start
    finally:
        model.set_attn_implementation(attention.ATTENTION_NAME)


def engine_ttft(session: Session, doc, question, partition) -> tuple[float, float, float]:
    """(wall time to the first token, phase 1 s, prefill s) as the engine reports them."""
    sync()
    start = time.perf_counter()
    encode, _ = session.encode(doc, partition, question_ids=question)
    _, stats = session.answer(question, max_new_tokens=1, loop_guard=False)
    return time.perf_counter() - start, encode.seconds, stats.prefill_seconds


def profile(call, path: Path, rows: int = 18) -> str:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    sync()
    start = time.perf_counter()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch_profile(activities=activities) as prof:
        call()
        sync()
    wall = time.perf_counter() - start
    events = prof.key_averages()
    table = events.table(sort_by="cuda_time_total" if torch.cuda.is_available() else "cpu_time_total", row_limit=rows, max_name_column_width=70)
    kernels = sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    text = f"wall under the profiler {wall:.4f} s; CUDA kernel launches {kernels}\n{table}"
    path.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="qwen2.5-0.5b")
    parser.add_argument("--lengths", default="30k")
    parser.add_argument("--question-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="gpu-out")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--star-block", type=int, default=16384,
                        help="also time and profile star with blocks (and relay) of this size; 0: no")
    parser.add_argument("--candidates", default="", help="comma list of CANDIDATES (changes tried by patching) to time too")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lengths = parse_lengths(args.lengths, "--lengths")
    config = copy.deepcopy(SHAPES[args.shape])
    config.max_position_embeddings = max(config.max_position_embeddings, max(lengths) + 4096)
    model = random_model(config, device=args.device, dtype=torch.bfloat16)
    session = Session(model, None, _comm(args.device), warm_up=True)
    SESSION.append(session)
    gen = torch.Generator().manual_seed(0)
    question = torch.randint(0, config.vocab_size, (args.question_tokens,), generator=gen).tolist()
    results = []
    for length in lengths:
        doc = torch.randint(0, config.vocab_size, (length,), generator=gen)
        ids = torch.cat([doc, torch.tensor(question)]).to(args.device)
        partition = session.plan(length, "dense")
        hf, engine = [], []
        for _ in range(args.repeats + 1):  # the first of each: untimed warm-up at this length
            session.engine.reset()
            hf.append(hf_ttft(model, ids))
            session.engine.reset()
            torch.cuda.empty_cache()
            engine.append(engine_ttft(session, doc, question, partition))
        hf, engine = hf[1:], engine[1:]
        row = {
            "length": length,
            "hf_ttft_s": statistics.median(hf),
            "engine_ttft_s": statistics.median(e[0] for e in engine),
            "engine_phase1_s": statistics.median(e[1] for e in engine),
            "engine_prefill_s": statistics.median(e[2] for e in engine),
        }
        row["ratio"] = row["engine_ttft_s"] / row["hf_ttft_s"]
        results.append(row)
        print(json.dumps(row), flush=True)
        session.engine.reset()
        profile(lambda: hf_ttft(model, ids), out / f"profile-hf-{length}.txt")
        session.engine.reset()
        text = profile(lambda: engine_ttft(session, doc, question, partition), out / f"profile-dense-{length}.txt")
        session.engine.reset()
        session.encode(doc, partition)
        profile(lambda: session.answer(question, max_new_tokens=1, loop_guard=False), out / f"profile-prefill-{length}.txt")
        if args.star_block and length > args.star_block:
            star = session.plan(length, "star", block_size=args.star_block, relay=args.star_block)
            session.engine.reset()
            engine_ttft(session, doc, question, star)  # warm-up at this partition
            session.engine.reset()
            row["star_ttft_s"] = engine_ttft(session, doc, question, star)[0]
            session.engine.reset()
            profile(lambda: engine_ttft(session, doc, question, star), out / f"profile-star-{length}.txt", rows=30)
            print("star", row["star_ttft_s"], flush=True)
        for name in [c for c in args.candidates.split(",") if c]:
            patch = CANDIDATES[name]
            with patch():
                times = []
                for _ in range(args.repeats + 1):
                    session.engine.reset()
                    times.append(engine_ttft(session, doc, question, partition)[0])
                row[f"candidate_{name}_s"] = statistics.median(times[1:])
                print(name, row[f"candidate_{name}_s"], flush=True)
        print(text.splitlines()[0], file=sys.stderr)
    print(f"# {torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'} | {args.shape} bf16 | question {args.question_tokens} tokens | "
          f"medians of {args.repeats}")
    print("| length | transformers s | engine dense s | ratio | engine phase 1 s | engine prefill s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['length']} | {r['hf_ttft_s']:.4f} | {r['engine_ttft_s']:.4f} | {r['ratio']:.3f} | "
              f"{r['engine_phase1_s']:.4f} | {r['engine_prefill_s']:.4f} |")
    names = [k for k in dict.fromkeys(k for r in results for k in r) if k.startswith("candidate_") or k == "star_ttft_s"]
    if names:
        print("| length | " + " | ".join(n.removeprefix("candidate_").removesuffix("_s").replace("star_ttft", f"star {args.star_block}+relay") for n in names) + " |")
        for r in results:
            print(f"| {r['length']} | " + " | ".join(f"{r[n]:.4f} ({r[n] / r['hf_ttft_s']:.3f})" if n in r else "-" for n in names) + " |")
    (out / f"dense-vs-hf-{args.shape}.json").write_text(json.dumps(results, indent=2) + "\n")


@contextlib.contextmanager
def _passes_32k():
    """Candidate: the document in passes of 32K whatever the free memory (the engine before it
    took the whole document in one pass where memory allows), for a side-by-side figure."""
    engine = SESSION[0].engine
    before = engine._activation_bytes
    engine._activation_bytes = None
    try:
        yield
    finally:
        engine._activation_bytes = before


CANDIDATES = {"passes_32k": _passes_32k}
SESSION: list = []


def _comm(device: str):
    from starcli.star.comm import init_comm

    return init_comm(device)


if __name__ == "__main__":
    main()
