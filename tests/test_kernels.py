"""Every CPU kernel equals a float64 softmax reference, with grouped heads and bottom-right causal masks."""

import pytest
import torch

from starcli.star.kernels import KernelError, attention_at, attention_upto, attention_with_lse, resolve_kernel
from starcli.star.masks import LayerPattern


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


# --- layer patterns: sliding windows, chunks, soft caps, by position ---------------------------


def pattern_reference(q, k, v, query_start, key_start, causal, pattern, scale):
    """float64, every score computed and masked by position: the literal definition."""
    q, k, v = q.double(), k.double(), v.double()
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    scores = (q @ k.transpose(-1, -2)) * scale
    if pattern.softcap:
        scores = torch.tanh(scores / pattern.softcap) * pattern.softcap
    rows = torch.arange(q.shape[2]) + query_start
    cols = torch.arange(k.shape[2]) + key_start
    seen = pattern.visible(rows, cols, causal)
    if seen is not None:
        scores = scores.masked_fill(~seen, float("-inf"))
    lse = torch.logsumexp(scores, -1)
    probs = torch.exp(scores - torch.where(torch.isinf(lse), 0.0, lse).unsqueeze(-1))
    return probs @ v, lse


PATTERNS = [LayerPattern(window=7), LayerPattern(window=40), LayerPattern(chunk=16), LayerPattern(softcap=1.5),
            LayerPattern(window=12, softcap=2.0)]


@pytest.mark.parametrize("kernel", ["math", "cpu-flash"])
@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
@pytest.mark.parametrize("case", [
    (30, 30, 30, 30, True),     # a block attending to itself, mid-document
    (100, 20, 60, 40, False),   # a block over earlier keys: the window cuts them partly
    (100, 20, 0, 16, False),    # the anchor: out of a short window's reach
    (2000, 3, 1000, 1000, False),  # phase 2 over the document: only the window's end is read
    (4, 1, 0, 5, True),         # a decoding step over its own tail
], ids=str)
def test_attention_at_matches_float64(kernel, pattern, case):
    query_start, sq, key_start, sk, causal = case
    if causal:
        assert key_start + sk == query_start + sq
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 4, sq, 16), torch.randn(1, 2, sk, 16), torch.randn(1, 2, sk, 12)  # values: own size
    out, lse = attention_at(q, k, v, query_start=query_start, key_start=key_start, causal=causal, scale=0.3,
                            kernel=kernel, pattern=pattern)
    ref_out, ref_lse = pattern_reference(q, k, v, query_start, key_start, causal, pattern, 0.3)
    torch.testing.assert_close(out.double(), ref_out, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(lse.double(), ref_lse, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("kernel", ["math", "cpu-flash"])
@pytest.mark.parametrize("window, length", [(2, 9), (7, 30), (7, 36), (40, 300), (64, 1000)])
@pytest.mark.parametrize("batch", [1, 3])
def test_sliding_window_over_own_keys_in_two_fused_calls(kernel, window, length, batch, monkeypatch):
    """A block or pass attending causally to itself through a window: chunks of window - 1, each
    over itself and, reversed, over the chunk before (kernels._sliding_band), never the masked
    float32 path; equal to the float64 definition, several sequences batched."""
    from starcli.star import kernels

    def masked(*args, **kwargs):
        raise AssertionError("the masked path ran")

    if kernel != "math":  # the math kernel is that masked function itself
        monkeypatch.setattr(kernels, "positional_attention", masked)
    torch.manual_seed(2)
    q, k, v = torch.randn(batch, 4, length, 16), torch.randn(batch, 2, length, 16), torch.randn(batch, 2, length, 12)
    pattern = LayerPattern(window=window)
    out, lse = attention_at(q, k, v, query_start=500, key_start=500, causal=True, scale=0.3, kernel=kernel,
                            pattern=pattern)
    ref_out, ref_lse = pattern_reference(q, k, v, 500, 500, True, pattern, 0.3)
    torch.testing.assert_close(out.double(), ref_out, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(lse.double(), ref_lse, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
def test_positions_on_the_device_mask_like_the_host(pattern):
    """The captured step's path (positions as tensors, buffer slots past the end masked) equals the
    host path over the filled keys."""
    torch.manual_seed(2)
    q, k, v = torch.randn(1, 4, 1, 16), torch.randn(1, 2, 64, 16), torch.randn(1, 2, 64, 16)
    filled, key_start = 41, 500
    out, lse = attention_upto(q, k, v, torch.tensor(filled), 0.25, pattern, key_start=key_start)
    want = attention_at(q, k[:, :, :filled], v[:, :, :filled], query_start=key_start + filled - 1, key_start=key_start,
                        causal=True, scale=0.25, kernel="math", pattern=pattern)
    torch.testing.assert_close(out, want[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(lse, want[1], atol=1e-6, rtol=1e-6)


def test_values_of_another_head_size_through_the_fused_kernel():
    """Multi-head latent attention: values narrower or wider than queries and keys."""
    torch.manual_seed(3)
    for value_dim in (8, 24):
        q, k, v = torch.randn(1, 4, 9, 16), torch.randn(1, 4, 9, 16), torch.randn(1, 4, 9, value_dim)
        got = attention_with_lse(q, k, v, causal=True, kernel="cpu-flash")
        want = attention_with_lse(q, k, v, causal=True, kernel="math")
        assert got[0].shape[-1] == value_dim
        torch.testing.assert_close(got[0], want[0], atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(got[1], want[1], atol=2e-5, rtol=2e-5)
