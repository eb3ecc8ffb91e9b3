"""The log-sum-exp merge of two partials written straight into a destination, in one pass.

``merge.merge_partials`` is the reference: composed of torch ops it makes float32 copies of both
outputs, weighs, adds and rounds back, about eight passes over tensors of the queries' size. In a
star pass those tensors are as large as the document's queries times the model width (0.9 GB a
layer for an 8B model at 128K), so the two merges of every layer (local with anchor, then relay)
cost more than many of its matmuls. On CUDA with Triton this is one kernel that reads both partials
once and writes the result where it belongs (the destination may be either partial: each element
is read before it is written, by the same program). Elsewhere the reference runs and its result is
copied into the destination.

Layout as in kernels.py: out (B, H, S, D), lse (B, H, S) float32; any of them may be a slice along
S of a larger tensor.
"""

from __future__ import annotations

import torch

from .merge import merge_partials

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU builds of torch come without Triton
    triton = None

_BLOCK_S = 32


if triton is not None:

    @triton.jit
    def _merge_two(a_ptr, la_ptr, b_ptr, lb_ptr, o_ptr, lo_ptr, heads, length, dim,
                   a_b, a_h, a_s, la_b, la_h, b_b, b_h, b_s, lb_b, lb_h, o_b, o_h, o_s, lo_b, lo_h,
                   BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
        # 64-bit offsets: one pass's output may hold more than 2^31 elements
        bh = tl.program_id(0).to(tl.int64)
        batch, head = bh // heads, bh % heads
        rows = tl.program_id(1).to(tl.int64) * BLOCK_S + tl.arange(0, BLOCK_S)
        cols = tl.arange(0, BLOCK_D)
        row_ok = rows < length
        both_ok = row_ok[:, None] & (cols[None, :] < dim)
        lse_a = tl.load(la_ptr + batch * la_b + head * la_h + rows, mask=row_ok, other=float("-inf"))
        lse_b = tl.load(lb_ptr + batch * lb_b + head * lb_h + rows, mask=row_ok, other=float("-inf"))
        top = tl.maximum(lse_a, lse_b)
        # both partials empty: shift by 0, so both weights are exp(-inf) = 0 and lse stays -inf
        shift = tl.where(top == float("-inf"), 0.0, top)
        weight_a = tl.exp(lse_a - shift)
        weight_b = tl.exp(lse_b - shift)
        total = weight_a + weight_b
        seen = total > 0
        norm = tl.where(seen, total, 1.0)
        lse = tl.where(seen, shift + tl.log(norm), float("-inf"))
        # weights relative to the merged lse, as in merge_partials: exp(lse_x - lse)
        weight_a = weight_a / norm
        weight_b = weight_b / norm
        out_a = tl.load(a_ptr + batch * a_b + head * a_h + rows[:, None] * a_s + cols[None, :], mask=both_ok, other=0.0)
        out_b = tl.load(b_ptr + batch * b_b + head * b_h + rows[:, None] * b_s + cols[None, :], mask=both_ok, other=0.0)
        merged = out_a.to(tl.float32) * weight_a[:, None] + out_b.to(tl.float32) * weight_b[:, None]
        tl.store(o_ptr + batch * o_b + head * o_h + rows[:, None] * o_s + cols[None, :],
                 merged.to(o_ptr.dtype.element_ty), mask=both_ok)
        tl.store(lo_ptr + batch * lo_b + head * lo_h + rows, lse, mask=row_ok)


def _fused(*tensors: torch.Tensor) -> bool:
    # the kernel steps through D (outputs) and S (lse) by one element
    return triton is not None and tensors[0].is_cuda and all(t.stride(-1) == 1 for t in tensors)


def merge_into(out: torch.Tensor, lse: torch.Tensor, out_a: torch.Tensor, lse_a: torch.Tensor,
               out_b: torch.Tensor, lse_b: torch.Tensor) -> None:
    """Write the merge of the partials (out_a, lse_a) and (out_b, lse_b) into (out, lse)."""
    if not _fused(out, lse, out_a, lse_a, out_b, lse_b):
        merged, merged_lse = merge_partials(out_a, lse_a, out_b, lse_b)
        out.copy_(merged)
        lse.copy_(merged_lse)
        return
    batch, heads, length, dim = out.shape
    if length == 0:
        return
    grid = (batch * heads, triton.cdiv(length, _BLOCK_S))
    _merge_two[grid](
        out_a, lse_a, out_b, lse_b, out, lse, heads, length, dim,
        *out_a.stride()[:3], *lse_a.stride()[:2], *out_b.stride()[:3], *lse_b.stride()[:2],
        *out.stride()[:3], *lse.stride()[:2],
        BLOCK_S=_BLOCK_S, BLOCK_D=triton.next_power_of_2(dim),
    )
