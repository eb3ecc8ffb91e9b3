"""Log-sum-exp merge of partial attention results.

Attention of queries over a key set K = K_a ∪ K_b can be computed from the two halves alone:
each half returns its softmax-normalised output and the log-sum-exp (LSE) of its scores, and

    lse = logaddexp(lse_a, lse_b)
    out = exp(lse_a - lse) * out_a + exp(lse_b - lse) * out_b

is exact. This is what lets every rank attend only to the KV it holds. Pure tensor functions: no
communication here.

Shapes: ``out`` is (B, H, S, D) in any float dtype; ``lse`` is (B, H, S) in float32. A partial over
an empty key set has ``lse = -inf`` (and any ``out``); merging two empty partials gives out = 0,
lse = -inf instead of NaN.
"""

from __future__ import annotations

import torch


def _finite_or_zero(lse: torch.Tensor) -> torch.Tensor:
    # lse is -inf only where every partial was empty; subtracting 0 there keeps weights at exp(-inf)=0
    return torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))


def _accumulation_dtype(out: torch.Tensor) -> torch.dtype:
    # at least float32 (bf16 partials), float64 kept for reference tests
    return torch.promote_types(out.dtype, torch.float32)


def merge_partials(
    out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two partial attention results over disjoint key sets.

    out_*: (B, H, S, D); lse_*: (B, H, S) float32. Returns (out (B, H, S, D) in out_a's dtype,
    lse (B, H, S) float32). Computed in at least float32 so bf16 partials lose nothing in the weights.
    """
    acc = _accumulation_dtype(out_a)
    lse = torch.logaddexp(lse_a, lse_b)
    base = _finite_or_zero(lse)
    weight_a = torch.exp(lse_a - base).unsqueeze(-1)
    weight_b = torch.exp(lse_b - base).unsqueeze(-1)
    out = weight_a * out_a.to(acc) + weight_b * out_b.to(acc)
    return out.to(out_a.dtype), lse


def merge_many(outs: list[torch.Tensor], lses: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge any number of partials at once (e.g. one per rank after an all-gather).

    outs: list of (B, H, S, D); lses: list of (B, H, S) float32. The result does not depend on the
    order of the list beyond float rounding; every rank merges in rank order so all agree bitwise.
    """
    if len(outs) == 1:
        return outs[0], lses[0]
    return merge_stacked(torch.stack(outs), torch.stack(lses))


def merge_stacked(outs: torch.Tensor, lses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge P partials stacked along dim 0: outs (P, ..., S, D), lses (P, ..., S) -> (..., S, D), (..., S)."""
    lse = torch.logsumexp(lses, dim=0)
    weights = torch.exp(lses - _finite_or_zero(lse)).unsqueeze(-1)
    out = (weights * outs.to(_accumulation_dtype(outs))).sum(dim=0)
    return out.to(outs.dtype), lse
