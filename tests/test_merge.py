"""The log-sum-exp merge equals softmax attention over the concatenated keys (float64 reference)."""

import pytest
import torch

from starcli.star.kernels import attention_with_lse
from starcli.star.merge import merge_many, merge_partials


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
