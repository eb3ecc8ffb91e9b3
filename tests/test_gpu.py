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


def _answer(engine, doc, question, partition):
    engine.encode_context(doc, partition)
    return engine.answer(question.tolist(), max_new_tokens=8)
