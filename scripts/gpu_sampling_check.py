"""Decode speed of one starcli package version under several token-choice settings, in process.

Builds a random-weight model of a bench shape (default qwen2.5-0.5b), encodes one random document
(dense attention) once, then answers the same random question several times per variant with
``Session.answer`` and reads decode ms/token from the returned stats (capture excluded by the
engine; one untimed answer first pays the capture). Rounds interleave the variants, so drift hits
them alike. Which ``starcli`` is imported is up to PYTHONPATH (run it from outside the repo root).

  python3 scripts/gpu_sampling_check.py --label current --json out.json
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import statistics
import sys
import time

import torch

import starcli
from starcli.model.load import random_model
from starcli.run.session import Session
from starcli.star import engine as engine_module
from starcli.star.comm import Comm
from starcli.star.sampling import SamplingParams
from starcli.tools.bench.shapes import SHAPES

HAS_PENALTY = "repetition_penalty" in inspect.signature(SamplingParams).parameters
HAS_GUARD = hasattr(engine_module, "repeating_tail")


def variants() -> dict[str, dict]:
    """name -> SamplingParams keywords (None: skip on this version), plus the guard switch."""
    out = {
        "greedy": dict(params={}),
        "sample t0.7 p0.8 k20": dict(params=dict(temperature=0.7, top_p=0.8, top_k=20, seed=1)),
    }
    if HAS_GUARD:
        out["greedy, no loop guard"] = dict(params={}, no_guard=True)
    if HAS_PENALTY:
        out["greedy + rep 1.05"] = dict(params=dict(repetition_penalty=1.05))
        out["sample t0.7 p0.8 k20 + rep 1.05"] = dict(
            params=dict(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05, seed=1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--label", required=True)
    parser.add_argument("--shape", default="qwen2.5-0.5b")
    parser.add_argument("--length", type=int, default=30 * 1024)
    parser.add_argument("--question-tokens", type=int, default=32)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--question-seed", type=int, default=None,
                        help="fixed question; default: the first of seeds 1.. whose greedy answer runs to --new")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    device = torch.device("cuda:0" if args.device == "cuda" else args.device)
    print(f"[{args.label}] starcli from {starcli.__file__}; penalty={HAS_PENALTY} guard={HAS_GUARD}; "
          f"torch {torch.__version__}; {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}",
          flush=True)
    config = copy.deepcopy(SHAPES[args.shape])
    config.max_position_embeddings = max(config.max_position_embeddings, args.length + args.question_tokens + args.new + 64)
    model = random_model(config, device=device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32, seed=0)
    session = Session(model, None, Comm(device=device), warm_up=True)
    print(f"[{args.label}] stop tokens {sorted(session.stops)}; decode mode {session.engine.decode}", flush=True)
    vocab = config.vocab_size
    doc = torch.randint(0, vocab, (args.length,), generator=torch.Generator().manual_seed(1234))
    enc, _ = session.encode(doc, session.plan(args.length, "dense"))
    print(f"[{args.label}] encoded {args.length} tokens in {enc.seconds:.3f} s", flush=True)

    def question(seed: int) -> list[int]:
        return torch.randint(0, vocab, (args.question_tokens,), generator=torch.Generator().manual_seed(seed)).tolist()

    # warm-up answer (pays the capture of the fixed-shape step), and the question choice
    seeds = [args.question_seed] if args.question_seed is not None else list(range(1, 9))
    for seed in seeds:
        tokens, st = session.answer(question(seed), max_new_tokens=args.new)
        print(f"[{args.label}] question seed {seed}: greedy {len(tokens)} tokens, stop '{st.stop_reason}', "
              f"capture {st.capture_seconds:.3f} s, {1e3 * st.decode_seconds / max(1, st.decode_tokens):.3f} ms/token", flush=True)
        if len(tokens) >= args.new:
            break
    q = question(seed)
    result = {"label": args.label, "starcli": starcli.__file__, "question_seed": seed,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "variants": {}}

    table = variants()
    samples: dict[str, list[dict]] = {name: [] for name in table}
    real_guard = getattr(engine_module, "repeating_tail", None)
    for rnd in range(args.runs):
        for name, v in table.items():
            if v.get("no_guard"):
                engine_module.repeating_tail = lambda tokens: None
            try:
                t0 = time.perf_counter()
                tokens, st = session.answer(q, max_new_tokens=args.new, sampling=SamplingParams(**v["params"]))
                wall = time.perf_counter() - t0
            finally:
                if v.get("no_guard"):
                    engine_module.repeating_tail = real_guard
            ms = 1e3 * st.decode_seconds / max(1, st.decode_tokens)
            samples[name].append(dict(ms_tok=ms, tokens=len(tokens), decode_tokens=st.decode_tokens,
                                      stop=st.stop_reason, capture_s=st.capture_seconds, wall_s=wall,
                                      first=tokens[:8]))
            print(f"[{args.label}] round {rnd} {name:<34} {ms:7.3f} ms/token  {len(tokens):4d} tokens  "
                  f"stop '{st.stop_reason}'  capture {st.capture_seconds:.3f} s  first {tokens[:6]}", flush=True)
    for name, runs in samples.items():
        result["variants"][name] = dict(
            ms_tok_median=statistics.median(r["ms_tok"] for r in runs),
            ms_tok_all=[round(r["ms_tok"], 4) for r in runs],
            tokens=[r["tokens"] for r in runs], stops=sorted({r["stop"] for r in runs}))
    print(f"[{args.label}] summary", flush=True)
    for name, r in result["variants"].items():
        print(f"[{args.label}]   {name:<34} median {r['ms_tok_median']:7.3f} ms/token  all {r['ms_tok_all']}  "
              f"tokens {r['tokens']}  stops {r['stops']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
