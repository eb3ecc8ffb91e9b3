"""Every CPU kernel equals a float64 softmax reference, with grouped heads and bottom-right causal masks."""

import pytest
import torch

from starcli.star.kernels import KernelError, attention_upto, attention_with_lse, resolve_kernel


def reference(q, k, v, causal):
    q, k, v = q.double(), k.double(), v.double()
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    sq, sk = q.shape[2], k.shape[2]
    if causal:
        rows = torch.arange(sq).unsqueeze(1) + (sk - sq)
        scores = scores.masked_fill(torch.arange(sk).unsqueeze(0) > rows, float("-inf"))
    return torch.softmax(scores, -1) @ v, torch.logsumexp(scores, -1)


@pytest.mark.parametrize("kernel", ["math", "cpu-flash"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("sizes", [(5, 5), (3, 9), (1, 7), (17, 17)])
def test_kernel_matches_float64(kernel, causal, heads, sizes):
    torch.manual_seed(0)
    hq, hkv = heads
    sq, sk = sizes
    q = torch.randn(2, hq, sq, 16)
    k = torch.randn(2, hkv, sk, 16)
    v = torch.randn(2, hkv, sk, 16)
    out, lse = attention_with_lse(q, k, v, causal=causal, kernel=kernel)
    ref_out, ref_lse = reference(q, k, v, causal)
    # float32 inputs: errors are a few ulps of the accumulated sums
    torch.testing.assert_close(out.double(), ref_out, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(lse.double(), ref_lse, atol=2e-5, rtol=2e-5)


def test_empty_keys_give_empty_partial():
    q = torch.randn(1, 2, 3, 8)
    out, lse = attention_with_lse(q, q[:, :, :0], q[:, :, :0], causal=False, kernel="cpu-flash")
    assert torch.equal(out, torch.zeros_like(q)) and torch.isneginf(lse).all()


def test_resolve_kernel():
    assert resolve_kernel("auto", "cpu") == "cpu-flash"
    with pytest.raises(KernelError):
        resolve_kernel("cudnn", "cpu")
    with pytest.raises(KernelError):
        resolve_kernel("nope", "cpu")


@pytest.mark.parametrize("sk", [8192, 8192 + 4096 + 17])
def test_split_key_decoding_matches_float64(sk):
    from starcli.star import kernels

    torch.manual_seed(3)
    q = torch.randn(1, 8, 1, 16)
    k = torch.randn(1, 2, sk, 16)
    v = torch.randn(1, 2, sk, 16)
    out, lse = kernels._split_keys(q, k, v, 16**-0.5, "math")
    ref_out, ref_lse = reference(q, k, v, False)
    torch.testing.assert_close(out.double(), ref_out, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(lse.double(), ref_lse, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("sq, end, capacity", [(1, 1, 8), (1, 7, 16), (3, 9, 9), (5, 12, 32)])
def test_attention_upto_equals_causal_attention_over_the_filled_keys(heads, sq, end, capacity):
    """The fixed-shape tail attention of captured decoding: keys past the device-side end are
    ignored whatever they hold (finite garbage here), and the rest is bottom-right causal."""
    torch.manual_seed(0)
    hq, hkv = heads
    q = torch.randn(2, hq, sq, 16)
    k, v = torch.randn(2, hkv, capacity, 16), torch.randn(2, hkv, capacity, 16)
    k[:, :, end:] *= 30  # large garbage past ``end`` would show if it leaked
    v[:, :, end:] *= 30
    out, lse = attention_upto(q, k, v, torch.tensor(end), scale=16**-0.5)
    ref_out, ref_lse = reference(q, k[:, :, :end], v[:, :, :end], causal=True)
    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse.double(), ref_lse, atol=1e-5, rtol=1e-5)
