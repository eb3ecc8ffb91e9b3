"""The split-KV kernels against one float64 softmax: shared by the GPU test and the Triton
interpreter's run on the CPU (``TRITON_INTERPRET=1 python -m tests.split_kv_cases`` where Triton is
installed; it is not in requirements.lock, being a gigabyte), which also runs window families'
phase 2 through the interpreted kernels against transformers.

A document (non-causal) plus a tail whose valid length is a device tensor (causal, bottom-right);
with a sliding window, the first query's slot is an int for the document and a device tensor for
the tail, as the captured decoding step passes them.
"""

from __future__ import annotations

import itertools
import os
import sys

import torch


def split_kv_case(device, heads, dim, queries, doc, dtype, window, capacity=1024):
    """((out, lse) of the kernels, (out, lse) of float64), all float64 on the CPU, for one case."""
    from starcli.star.split_kv import Segment, split_kv_attention

    torch.manual_seed(0)
    hq, hkv = heads
    valid = 60 + queries
    q = torch.randn(1, queries, hq, dim, device=device, dtype=dtype).transpose(1, 2)  # the model's layout
    doc_k, doc_v = (torch.randn(1, hkv, doc + 64, dim, device=device, dtype=dtype)[:, :, :doc] for _ in range(2))
    tail_k, tail_v = (torch.randn(1, hkv, capacity, dim, device=device, dtype=dtype) for _ in range(2))
    tail_k[:, :, valid:] *= 50  # past the valid end: must not leak in
    first = valid - queries  # the first query's slot in the tail
    segments = ([Segment(doc_k, doc_v, window=window, first_query=doc + first)] if doc else []) + [
        Segment(tail_k, tail_v, torch.tensor(valid, device=device), True, window, torch.tensor(first, device=device))]
    scale = dim**-0.5
    out, lse = split_kv_attention(q, segments, scale)
    keys = torch.cat([doc_k, tail_k[:, :, :valid]], 2).double().cpu().repeat_interleave(hq // hkv, 1)
    values = torch.cat([doc_v, tail_v[:, :, :valid]], 2).double().cpu().repeat_interleave(hq // hkv, 1)
    scores = (q.double().cpu() @ keys.transpose(-1, -2)) * scale
    own = (doc + first + torch.arange(queries))[:, None]
    allowed = torch.arange(doc + valid)[None, :] <= own
    if window is not None:
        allowed &= torch.arange(doc + valid)[None, :] > own - window
    scores = scores.masked_fill(~allowed, float("-inf"))
    return (out.double().cpu(), lse.double().cpu()), (torch.softmax(scores, -1) @ values, torch.logsumexp(scores, -1))


def main() -> int:
    """Every small case through the Triton interpreter on the CPU (set before Triton is imported)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("run with TRITON_INTERPRET=1", file=sys.stderr)
        return 2
    from starcli.star import split_kv

    split_kv._multiprocessors = lambda device: 8  # what a GPU would report; splits depend on it
    failures = 0
    for heads, dim, queries, doc, window in itertools.product([(4, 2), (14, 2)], [16, 64], [1, 20], [0, 300], [None, 90]):
        got, want = split_kv_case("cpu", heads, dim, queries, doc, torch.float32, window, capacity=256)
        errors = [(a - b).abs().max().item() for a, b in zip(got, want)]
        ok = max(errors) < 1e-4
        failures += not ok
        print(f"heads {heads} dim {dim} queries {queries} document {doc} window {window}: "
              f"{'ok' if ok else 'WRONG'} {errors[0]:.1e} {errors[1]:.1e}")
    # the engine's phase 2 through the interpreted kernels: windowed families answer as transformers
    from starcli.star.engine import StarEngine
    from starcli.star.partition import plan_partition

    from .test_families import DOCUMENT, engine_greedy, transformers_greedy
    from .tiny import family_pair, random_ids

    split_kv.available = lambda device: True
    for family, decode, question_tokens in itertools.product(["mistral-window", "gemma3", "gpt-oss"], ["eager", "static"], [6, 120]):
        reference, star = family_pair(family)
        doc, question = random_ids(DOCUMENT, 5), random_ids(question_tokens, 6)
        engine = StarEngine(star, kernel="math", decode=decode)
        ok = engine_greedy(engine, doc, question, plan_partition("dense", DOCUMENT)) == transformers_greedy(reference, doc, question)
        failures += not ok
        print(f"{family}, {decode} decoding, question of {question_tokens} tokens: {'transformers answer' if ok else 'WRONG'}")
    print(f"{failures} wrong")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
