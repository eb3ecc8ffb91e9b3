"""Attention of a few queries over long cached K/V in two Triton kernels (CUDA; split-KV decoding).

A decoding step's queries (one token, or a short question) attend to the whole document KV plus
the question/answer tail. Composed from torch ops this is some 40 kernels per layer (chunked
fused calls, the tail's masked softmax, two log-sum-exp merges), and in a captured graph those
launches, not the bytes read, set the time per token. Here it is two:

1. ``_partials``: the keys of every segment are cut into splits; one program per (batch, KV head,
   split, row tile) computes the softmax over its keys with an online max and writes its partial
   (out, lse). The rows are the query heads that share the KV head times the queries
   (grouped-query attention needs no KV copy). A segment's valid length may be a device tensor
   (the tail during graph replay); causal segments are bottom-right aligned to that length. A
   segment of a sliding-window layer also drops the keys a query's window has left behind, by the
   slot of the query's own position (again an int or a device tensor).
2. ``_merge``: every split's partial merged by the log-sum-exp rule (see merge.py), written as the
   final (out, lse), so ranks can still merge theirs afterwards.

Layout as in kernels.py: q (B, Hq, S, D), k/v (B, Hkv, N, D) with unit stride on D; out (B, Hq, S, D)
in q's dtype, lse (B, Hq, S) float32, natural log.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU builds of torch come without Triton; the torch path serves there
    triton = None

# Keys per program: about two programs per SM over the longest segment keeps the GPU busy
# without making the merge long.
_BLOCK_N = 64
_PROGRAMS_PER_SM = 2
# The tail is short (question plus answer): one split per this many of its slots.
_TAIL_SPLIT = 256


@dataclass
class Segment:
    """Keys and values (B, Hkv, N, D), the number of valid keys (int, or a 0-dim device tensor;
    None: all N) and whether the queries see them causally (bottom-right at the valid end).
    ``window``: query i sees only slots > ``first_query`` + i - window, where ``first_query`` (int
    or 0-dim device tensor) is the slot the first query's own position has in this segment (past
    its end for a document before the queries)."""

    keys: torch.Tensor
    values: torch.Tensor
    valid: torch.Tensor | int | None = None
    causal: bool = False
    window: int | None = None
    first_query: torch.Tensor | int = 0


def available(device: torch.device) -> bool:
    return triton is not None and device.type == "cuda"


if triton is not None:

    @triton.jit
    def _rows_of(bh, tile, kv_heads, rows, BLOCK_M: tl.constexpr):
        """Program ``bh``'s batch and KV head, and the query rows of its ``tile`` (with their mask)."""
        row = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        return bh // kv_heads, bh % kv_heads, row, row < rows

    # lengths change from call to call: one compiled kernel for all of them, not one per divisibility
    @triton.jit(do_not_specialize=["n_valid", "split_base", "first_query", "window"])
    def _partials(q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, valid_ptr, first_ptr,
                  sq_b, sq_h, sq_s, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n,
                  n_valid, first_query, window, kv_heads, queries, rows, split_keys, split_base, total_splits, scale,
                  HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  VALID_ON_DEVICE: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr,
                  FIRST_ON_DEVICE: tl.constexpr, PRECISION: tl.constexpr):
        bh = tl.program_id(0)
        split = tl.program_id(1)
        b, h, row, row_ok = _rows_of(bh, tl.program_id(2), kv_heads, rows, BLOCK_M)
        group = row // queries  # the query head within this KV head's group
        query = row % queries
        dims = tl.arange(0, HEAD_DIM)
        q = tl.load(q_ptr + b * sq_b + (h * (rows // queries) + group)[:, None] * sq_h + query[:, None] * sq_s + dims[None, :],
                    mask=row_ok[:, None], other=0.0)
        if VALID_ON_DEVICE:
            valid = tl.load(valid_ptr).to(tl.int32)
        else:
            valid = n_valid
        start = split * split_keys
        end = tl.minimum(start + split_keys, valid)
        # bottom-right causal: query i sees keys up to valid - queries + i
        limit = valid - queries + query
        if WINDOWED:
            if FIRST_ON_DEVICE:
                own = tl.load(first_ptr).to(tl.int32) + query
            else:
                own = first_query + query
            oldest = own - window  # the last slot the query's window has left behind
        m = tl.full([BLOCK_M], float("-inf"), tl.float32)
        total = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        k_base = k_ptr + b * sk_b + h * sk_h
        v_base = v_ptr + b * sv_b + h * sv_h
        # a fixed trip count (masked past ``end``): the valid length may only be known on the device
        for offset in range(0, split_keys, BLOCK_N):
            cols = start + offset + tl.arange(0, BLOCK_N)
            col_ok = cols < end
            k = tl.load(k_base + cols[:, None] * sk_n + dims[None, :], mask=col_ok[:, None], other=0.0)
            v = tl.load(v_base + cols[:, None] * sv_n + dims[None, :], mask=col_ok[:, None], other=0.0)
            scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
            keep = col_ok[None, :]
            if CAUSAL:
                keep = keep & (cols[None, :] <= limit[:, None])
            if WINDOWED:
                keep = keep & (cols[None, :] > oldest[:, None])
            scores = tl.where(keep, scores, float("-inf"))
            new_m = tl.maximum(m, tl.max(scores, 1))
            # rows with nothing seen yet keep m = -inf: shift by 0 there instead of NaN
            shift = tl.where(new_m == float("-inf"), 0.0, new_m)
            p = tl.exp(scores - shift[:, None])
            correction = tl.exp(m - shift)
            total = total * correction + tl.sum(p, 1)
            acc = acc * correction[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            m = new_m
        seen = total > 0
        out = tl.where(seen[:, None], acc / tl.where(seen, total, 1.0)[:, None], 0.0)
        lse = tl.where(seen, m + tl.log(tl.where(seen, total, 1.0)), float("-inf"))
        slot = (bh * total_splits + split_base + split) * rows + row
        tl.store(out_ptr + slot[:, None] * HEAD_DIM + dims[None, :], out, mask=row_ok[:, None])
        tl.store(lse_ptr + slot, lse, mask=row_ok)

    @triton.jit
    def _merge(part_out_ptr, part_lse_ptr, out_ptr, lse_ptr, so_b, so_h, so_s,
               kv_heads, queries, rows, total_splits,
               HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
        bh = tl.program_id(0)
        b, h, row, row_ok = _rows_of(bh, tl.program_id(1), kv_heads, rows, BLOCK_M)
        dims = tl.arange(0, HEAD_DIM)
        m = tl.full([BLOCK_M], float("-inf"), tl.float32)
        for split in range(0, total_splits):
            lse = tl.load(part_lse_ptr + (bh * total_splits + split) * rows + row, mask=row_ok, other=float("-inf"))
            m = tl.maximum(m, lse)
        shift = tl.where(m == float("-inf"), 0.0, m)
        total = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        for split in range(0, total_splits):
            slot = (bh * total_splits + split) * rows + row
            weight = tl.exp(tl.load(part_lse_ptr + slot, mask=row_ok, other=float("-inf")) - shift)
            part = tl.load(part_out_ptr + slot[:, None] * HEAD_DIM + dims[None, :], mask=row_ok[:, None], other=0.0)
            total += weight
            acc += weight[:, None] * part
        seen = total > 0
        out = tl.where(seen[:, None], acc / tl.where(seen, total, 1.0)[:, None], 0.0)
        lse = tl.where(seen, shift + tl.log(tl.where(seen, total, 1.0)), float("-inf"))
        group = row // queries
        query = row % queries
        head = h * (rows // queries) + group
        tl.store(out_ptr + b * so_b + head[:, None] * so_h + query[:, None] * so_s + dims[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])
        tl.store(lse_ptr + (b * kv_heads * (rows // queries) + head) * queries + query, lse, mask=row_ok)


@functools.lru_cache(maxsize=None)
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _splits(segment: Segment, batch_heads: int, sms: int) -> tuple[int, int]:
    """(number of splits, keys per split) for one segment."""
    n = segment.keys.shape[2]
    if segment.causal or isinstance(segment.valid, torch.Tensor):
        per = _TAIL_SPLIT
    else:
        wanted = max(1, _PROGRAMS_PER_SM * sms // batch_heads)
        per = max(_BLOCK_N, -(-n // wanted))
        per = -(-per // _BLOCK_N) * _BLOCK_N
    return max(1, -(-n // per)), per


def split_kv_attention(q: torch.Tensor, segments: list[Segment], scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of q over the union of ``segments``: (out (B, Hq, S, D), lse (B, Hq, S) float32)."""
    b, hq, s, d = q.shape
    hkv = segments[0].keys.shape[1]
    rows = (hq // hkv) * s
    block_m = 16 if rows <= 16 else (32 if rows <= 32 else 64)
    sms = _multiprocessors(q.device)
    plans = [_splits(seg, b * hkv, sms) for seg in segments]
    total = sum(count for count, _ in plans)
    part_out = torch.empty(b * hkv, total, rows, d, device=q.device, dtype=torch.float32)
    part_lse = torch.empty(b * hkv, total, rows, device=q.device, dtype=torch.float32)
    tiles = -(-rows // block_m)
    base = 0
    for seg, (count, per) in zip(segments, plans):
        k, v = seg.keys, seg.values
        on_device = isinstance(seg.valid, torch.Tensor)
        valid = k.shape[2] if seg.valid is None else (0 if on_device else int(seg.valid))
        first_on_device = isinstance(seg.first_query, torch.Tensor)
        _partials[(b * hkv, count, tiles)](
            q, k, v, part_out, part_lse, seg.valid if on_device else part_lse,
            seg.first_query if first_on_device else part_lse,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
            valid, 0 if first_on_device else int(seg.first_query), seg.window or 0, hkv, s, rows, per, base, total, scale,
            HEAD_DIM=d, BLOCK_M=block_m, BLOCK_N=_BLOCK_N, VALID_ON_DEVICE=on_device, CAUSAL=seg.causal,
            WINDOWED=seg.window is not None, FIRST_ON_DEVICE=first_on_device,
            PRECISION="ieee" if q.dtype == torch.float32 else "tf32",  # float32 stays float32 (no TF32)
        )
        base += count
    out = torch.empty_like(q)
    lse = torch.empty(b, hq, s, device=q.device, dtype=torch.float32)
    _merge[(b * hkv, tiles)](part_out, part_lse, out, lse, out.stride(0), out.stride(1), out.stride(2),
                             hkv, s, rows, total, HEAD_DIM=d, BLOCK_M=block_m)
    return out, lse
