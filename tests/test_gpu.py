"""CUDA kernels and the engine on a GPU (skipped without one; run on the GPU machine).

bf16 tolerances: inputs are rounded to bf16 (8 bits of mantissa, relative step 2^-8 ≈ 0.004);
outputs of softmax attention are averages of values with |v| ~ 1, so we allow 2e-2 absolute on
the output and 1e-2 on the LSE (computed in fp32 inside every kernel), against the float64 reference.
"""

import pytest
import torch

from starcli.star.kernels import attention_with_lse, resolve_kernel

from .test_kernels import reference

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _available(kernel):
    try:
        resolve_kernel(kernel, "cuda")
    except Exception:
        return False
    return True


@cuda
@pytest.mark.parametrize("kernel", ["cudnn", "flash-sdpa", "flash-attn", "math"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", [(32, 8), (14, 2), (8, 8)])
@pytest.mark.parametrize("sizes", [(1, 777), (64, 64), (300, 1000), (1024, 1024), (1, 20000), (4, 40960)])
def test_cuda_kernels_match_float64(kernel, causal, heads, sizes):
    if not _available(kernel):
        pytest.skip(f"{kernel} not available")
    torch.manual_seed(0)
    hq, hkv = heads
    sq, sk = sizes
    q = torch.randn(1, hq, sq, 128, device="cuda", dtype=torch.bfloat16)
    # keys are read from a larger preallocated buffer in the engine: test strided views too
    k = torch.randn(1, hkv, sk + 64, 128, device="cuda", dtype=torch.bfloat16)[:, :, :sk]
    v = torch.randn(1, hkv, sk + 64, 128, device="cuda", dtype=torch.bfloat16)[:, :, :sk]
    out, lse = attention_with_lse(q, k, v, causal=causal, kernel=kernel)
    ref_out, ref_lse = reference(q.cpu(), k.cpu(), v.cpu(), causal)
    assert out.shape == q.shape and lse.shape == q.shape[:3] and lse.dtype == torch.float32
    torch.testing.assert_close(out.double().cpu(), ref_out, atol=2e-2, rtol=0)
    torch.testing.assert_close(lse.double().cpu(), ref_lse, atol=1e-2, rtol=0)


@cuda
def test_engine_on_cuda_matches_cpu_float32():
    from starcli.star.engine import StarEngine
    from starcli.star.partition import plan_star

    from .tiny import random_ids, tiny_pair

    _, star = tiny_pair("llama")
    doc, question = random_ids(700, 1), random_ids(5, 2)
    cpu_tokens, _ = _answer(StarEngine(star, kernel="math"), doc, question, plan_star(700, 1, 256, 128))
    gpu = star.to("cuda")
    gpu_tokens, _ = _answer(StarEngine(gpu, kernel="auto"), doc, question, plan_star(700, 1, 256, 128))
    assert gpu_tokens == cpu_tokens


@cuda
@pytest.mark.parametrize("attention", ["dense", "star"])
def test_phase_one_takes_the_document_in_one_pass_where_memory_allows(attention):
    from starcli.star.engine import StarEngine
    from starcli.star.partition import plan_partition

    from .tiny import random_ids, tiny_pair

    _, star = tiny_pair("llama")
    star = star.to("cuda")
    doc, question = random_ids(1500, 1), random_ids(5, 2)
    partition = plan_partition(attention, 1500, 1, 256 if attention == "star" else None)
    one = StarEngine(star, kernel="auto", pass_tokens=512)
    one_tokens, _ = _answer(one, doc, question, partition)
    assert one.run.encode.passes == 1
    passes = StarEngine(star, kernel="auto", pass_tokens=512)
    passes._activation_bytes = None  # as where the activations would not fit
    passes_tokens, _ = _answer(passes, doc, question, partition)
    assert passes.run.encode.passes > 1 and passes_tokens == one_tokens


def _answer(engine, doc, question, partition):
    engine.encode_context(doc, partition)
    return engine.answer(question.tolist(), max_new_tokens=8)


def _graph_vs_eager(decode, attention, relay, dtype, sampling):
    from starcli.star.engine import StarEngine
    from starcli.star.partition import plan_partition

    from .tiny import random_ids, tiny_pair

    _, star = tiny_pair("qwen2", dtype=dtype)
    engine = StarEngine(star.to("cuda"), kernel="auto", decode=decode)
    n = 1500
    block = 512 if attention == "star" else None
    engine.encode_context(random_ids(n, 1), plan_partition(attention, n, 1, block, relay=relay))
    runs = []
    for question, keep in ((random_ids(7, 2), False), (random_ids(5, 3), False), (random_ids(4, 4), True)):
        tokens, stats = engine.answer(question.tolist(), max_new_tokens=40, sampling=sampling, keep_history=keep)
        runs.append((tokens, stats))
    return runs


@cuda
@pytest.mark.parametrize("attention, relay", [("star", None), ("star", 0), ("dense", None), ("ring", None)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_captured_decode_gives_the_eager_tokens(attention, relay, dtype):
    from starcli.star.sampling import SamplingParams

    for sampling in (SamplingParams(), SamplingParams(temperature=0.7, top_k=50, seed=1)):
        graph = _graph_vs_eager("graph", attention, relay, dtype, sampling)
        eager = _graph_vs_eager("eager", attention, relay, dtype, sampling)
        assert [t for t, _ in graph] == [t for t, _ in eager]
        # captured once for the first question, replayed for the next ones
        assert graph[0][1].capture_seconds > 0 and graph[1][1].capture_seconds == 0
        assert graph[0][1].decode_mode == "graph" and eager[0][1].decode_mode == "eager"


@cuda
@pytest.mark.parametrize("heads, dim", [((14, 2), 64), ((32, 8), 128), ((4, 2), 16)])
@pytest.mark.parametrize("queries", [1, 48])
@pytest.mark.parametrize("doc", [0, 700, 30000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window", [None, 90])
def test_split_kv_attention_matches_float64(heads, dim, queries, doc, dtype, window):
    """The split-KV kernels against float64 (tests/split_kv_cases.py), windows included."""
    from starcli.star.split_kv import available

    from .split_kv_cases import split_kv_case

    if not available(torch.device("cuda")):
        pytest.skip("triton not available")
    (out, lse), (want_out, want_lse) = split_kv_case("cuda", heads, dim, queries, doc, dtype, window)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=2e-2, rtol=0)
    torch.testing.assert_close(out, want_out, **tol)
    torch.testing.assert_close(lse, want_lse, **(tol if dtype == torch.float32 else dict(atol=1e-2, rtol=0)))


@cuda
def test_warm_up_runs_once_per_process_and_leaves_no_document():
    from starcli.star import engine as engine_module
    from starcli.star.engine import EngineError, StarEngine

    from .tiny import tiny_pair

    _, star = tiny_pair("qwen2")
    engine = StarEngine(star.to("cuda"))
    engine_module._WARMED_DEVICES.discard(engine.device)
    assert engine.warm_up() > 0 and engine.warm_up() == 0.0
    with pytest.raises(EngineError, match="encode_context must run"):
        engine.answer([1, 2], max_new_tokens=2)


def _captured_answer(comm, attention, relay):
    from starcli.star.engine import StarEngine
    from starcli.star.partition import plan_partition

    from .tiny import random_ids, tiny_pair

    _, star = tiny_pair("qwen2")  # float32: the ranks' different merge orders round alike
    engine = StarEngine(star.to(comm.device), comm, decode="graph")
    n = 1500
    engine.encode_context(random_ids(n, 1), plan_partition(attention, n, comm.world_size, 256 if attention == "star" else None, relay=relay))
    return [engine.answer(random_ids(6, q).tolist(), max_new_tokens=24)[0] for q in (2, 3)]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("attention, relay", [("star", None), ("star", 0), ("ring", None)])
def test_captured_decode_over_two_nccl_ranks_gives_the_one_rank_tokens(attention, relay):
    """Every rank captures the step with the NCCL all-gather of partials inside it, in lockstep."""
    from starcli.star.comm import Comm

    from . import distributed

    expected = _captured_answer(Comm(device=torch.device("cuda", 0)), attention, relay)
    for tokens in distributed.run_ranks(2, _captured_answer, attention, relay, device="cuda"):
        assert tokens == expected


@cuda
@pytest.mark.parametrize("family", ["gemma2-capped", "gemma3", "gpt-oss", "mistral-window", "llama4", "deepseek-v2"])
def test_families_on_cuda_equal_transformers(family):
    """Windows, caps, sinks, chunks and latent heads through the CUDA paths (the captured decoding
    step included), float32 so transformers' answer is exact; then bfloat16 through the fused
    kernels, which must run and answer in full."""
    from starcli.star.engine import StarEngine
    from starcli.star.partition import plan_partition, plan_star

    from .test_families import DOCUMENT, NEW, QUESTION, engine_greedy, transformers_greedy
    from .tiny import family_pair, random_ids

    reference, star = family_pair(family)
    reference, star = reference.to("cuda"), star.to("cuda")
    doc, question = random_ids(DOCUMENT, 1).to("cuda"), random_ids(QUESTION, 2).to("cuda")
    want = transformers_greedy(reference, doc, question)
    engine = StarEngine(star, kernel="auto")
    assert engine.decode == "graph"
    assert engine_greedy(engine, doc, question, plan_partition("dense", DOCUMENT)) == want
    assert engine_greedy(engine, doc, question, plan_star(DOCUMENT, 1, block_size=512)) == want
    half = StarEngine(star.to(torch.bfloat16), kernel="auto")
    assert len(engine_greedy(half, doc, question, plan_star(DOCUMENT, 1, block_size=128, relay=128))) == NEW


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fused_merge_into_matches_float64(dtype):
    from .test_merge import merged_into_a_slice

    merged_into_a_slice("cuda", dtype)
