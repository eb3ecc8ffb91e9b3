"""The log-sum-exp merge equals softmax attention over the concatenated keys (float64 reference)."""

import pytest
import torch

from starcli.star.kernels import attention_with_lse
from starcli.star.merge import merge_many, merge_partials
from starcli.star.merge_into import merge_into


def reference(q, k, v):
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    return torch.softmax(scores, -1) @ v, torch.logsumexp(scores, -1)


def partial(q, k, v):
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    lse = torch.logsumexp(scores, -1)
    return torch.exp(scores - lse.unsqueeze(-1)) @ v, lse


@pytest.mark.parametrize("splits", [[5], [1, 4], [2, 2, 1], [3, 0, 2], [0, 5]])
def test_merge_many_equals_full_softmax(splits):
    torch.manual_seed(0)
    q = torch.randn(2, 3, 4, 8, dtype=torch.float64)
    k = torch.randn(2, 3, sum(splits), 8, dtype=torch.float64) * 3  # large scores stress stability
    v = torch.randn(2, 3, sum(splits), 8, dtype=torch.float64)
    outs, lses, pos = [], [], 0
    for n in splits:
        o, l = partial(q, k[:, :, pos : pos + n], v[:, :, pos : pos + n])
        if n == 0:
            o = torch.zeros_like(o)
        outs.append(o)
        lses.append(l)
        pos += n
    out, lse = merge_many(outs, lses)
    ref_out, ref_lse = reference(q, k, v)
    torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(lse, ref_lse, atol=1e-12, rtol=1e-12)


def test_pairwise_merge_is_associative_with_many():
    torch.manual_seed(1)
    q = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    k = torch.randn(1, 2, 9, 4, dtype=torch.float64) * 10
    v = torch.randn(1, 2, 9, 4, dtype=torch.float64)
    parts = [partial(q, k[:, :, i : i + 3], v[:, :, i : i + 3]) for i in (0, 3, 6)]
    out, lse = merge_partials(*merge_partials(*parts[0], *parts[1]), *parts[2])
    ref_out, ref_lse = reference(q, k, v)
    torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(lse, ref_lse, atol=1e-12, rtol=1e-12)


def test_two_empty_partials_merge_to_zero_not_nan():
    out = torch.randn(1, 1, 2, 4)
    lse = torch.full((1, 1, 2), float("-inf"))
    merged, merged_lse = merge_partials(out, lse, out, lse)
    assert torch.equal(merged, torch.zeros_like(out))
    assert torch.isneginf(merged_lse).all()


def test_empty_partial_is_identity():
    torch.manual_seed(2)
    q = torch.randn(1, 2, 3, 4)
    k, v = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    full = attention_with_lse(q, k, v, causal=False, kernel="math")
    empty = attention_with_lse(q, k[:, :, :0], v[:, :, :0], causal=False, kernel="math")
    merged = merge_partials(*full, *empty)
    torch.testing.assert_close(merged[0], full[0])
    torch.testing.assert_close(merged[1], full[1])


def merged_into_a_slice(device, dtype):
    """merge_into over two halves of the keys, written into the middle rows of a larger output and
    in place over the first partial, against the float64 softmax over all keys (one half empty for
    some rows is covered by test_empty_partial_is_identity's rule: here every row sees both)."""
    torch.manual_seed(3)
    q = torch.randn(1, 6, 40, 64, dtype=torch.float64)
    k = torch.randn(1, 6, 50, 64, dtype=torch.float64) * 2
    v = torch.randn(1, 6, 50, 64, dtype=torch.float64)
    ref_out, ref_lse = reference(q, k, v)
    (out_a, lse_a), (out_b, lse_b) = partial(q, k[:, :, :20], v[:, :, :20]), partial(q, k[:, :, 20:], v[:, :, 20:])
    out_a, out_b = out_a.to(device, dtype), out_b.to(device, dtype)
    lse_a, lse_b = lse_a.float().to(device), lse_b.float().to(device)
    out = torch.full((1, 6, 60, 64), float("nan"), device=device, dtype=dtype)
    lse = torch.full((1, 6, 60), float("nan"), device=device)
    merge_into(out[:, :, 10:50], lse[:, :, 10:50], out_a, lse_a, out_b, lse_b)
    assert out[:, :, :10].isnan().all() and out[:, :, 50:].isnan().all() and lse[:, :, 50:].isnan().all()
    merge_into(out_a, lse_a, out_a, lse_a, out_b, lse_b)  # in place over a partial
    for got, got_lse in ((out[:, :, 10:50], lse[:, :, 10:50]), (out_a, lse_a)):
        torch.testing.assert_close(got.double().cpu(), ref_out, atol=2e-2 if dtype == torch.bfloat16 else 1e-5, rtol=0)
        torch.testing.assert_close(got_lse.double().cpu(), ref_lse, atol=1e-5, rtol=0)


def test_merge_into_a_slice_equals_full_softmax():
    merged_into_a_slice("cpu", torch.float32)


def test_merge_into_keeps_two_empty_partials_empty():
    out, lse = empty = torch.zeros(1, 2, 3, 4), torch.full((1, 2, 3), float("-inf"))
    merge_into(out, lse, *empty, *empty)
    assert torch.equal(out, torch.zeros(1, 2, 3, 4)) and torch.isneginf(lse).all()
