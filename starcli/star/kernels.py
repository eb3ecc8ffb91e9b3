"""Attention kernels that return the log-sum-exp (LSE) alongside the output.

Every Star Attention step is "attention of some queries over some keys, plus the LSE so partial
results can be merged". One function, ``attention_with_lse``, hides which kernel does it:

- ``flash-attn``: the flash-attn package, when installed (CUDA).
- ``cudnn``: ``aten._scaled_dot_product_cudnn_attention`` (CUDA; the fastest LSE-returning op in torch).
- ``flash-sdpa``: ``aten._scaled_dot_product_flash_attention`` (CUDA; FlashAttention-2 inside torch).
- ``cpu-flash``: ``aten._scaled_dot_product_flash_attention_for_cpu`` (CPU; tiled, memory-light).
- ``math``: plain matmul + logsumexp in float32, query-chunked; the portable reference path.

Layout everywhere: q (B, Hq, Sq, D), k/v (B, Hkv, Sk, D) with Hq a multiple of Hkv (grouped-query
attention: query head h uses KV head h // (Hq // Hkv)); out (B, Hq, Sq, D) in q's dtype,
lse (B, Hq, Sq) float32, natural log.

``causal=True`` means bottom-right aligned: query i sees keys up to Sk - Sq + i. Kernels disagree
on alignment when Sq != Sk, so only square causal calls reach a kernel; the rest is split into a
non-causal prefix and a square causal tail and merged.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..errors import UsageError
from .masks import PLAIN, LayerPattern
from .merge import merge_partials, merge_stacked

KERNELS = ("auto", "flash-attn", "cudnn", "flash-sdpa", "cpu-flash", "math")

# Rows of queries per chunk in the math kernel: bounds the (rows × Sk) score matrix in memory.
_MATH_QUERY_CHUNK = 1024


class KernelError(UsageError, RuntimeError):
    pass


def empty_partial(q: torch.Tensor, value_dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The result of attending to no keys: out 0, lse -inf (merges as a no-op). ``value_dim``: the
    values' head size where it differs from the queries' (multi-head latent attention)."""
    b, h, s, d = q.shape
    out = q.new_zeros(b, h, s, value_dim or d)
    return out, torch.full((b, h, s), float("-inf"), device=q.device, dtype=torch.float32)


def _group_queries(q: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """(B, Hq, S, D) -> (B, Hkv, G·S, D): without a causal mask, the G query heads sharing one KV
    head are just more queries for it, so grouped-query attention needs no KV copy."""
    b, hq, s, d = q.shape
    groups = hq // num_kv_heads
    return q.reshape(b, num_kv_heads, groups * s, d)


def _ungroup(out: torch.Tensor, lse: torch.Tensor, num_q_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    b, hkv, gs, d = out.shape
    s = gs // (num_q_heads // hkv)
    return out.reshape(b, num_q_heads, s, d), lse.reshape(b, num_q_heads, s)


def _expand_kv(x: torch.Tensor, num_q_heads: int) -> torch.Tensor:
    groups = num_q_heads // x.shape[1]
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def _math(q, k, v, causal: bool, scale: float):
    """Reference kernel: float32 scores, exact softmax (bottom-right causal)."""
    sq, sk = q.shape[2], k.shape[2]
    query_positions = torch.arange(sk - sq, sk, device=q.device) if causal else None
    key_positions = torch.arange(sk, device=q.device) if causal else None
    return positional_attention(q, k, v, query_positions, key_positions, causal=causal, scale=scale)


def positional_attention(q, k, v, query_positions, key_positions, *, causal: bool, scale: float,
                         pattern: LayerPattern = PLAIN):
    """Attention in float32 with an explicit mask from token positions (``query_positions`` (Sq,),
    ``key_positions`` (Sk,), integer tensors on q's device; None when nothing is masked), query rows
    in chunks to bound the (rows × Sk) score matrix. Rows that see no key give out 0, lse -inf.
    Every masked or soft-capped call lands here; so does the CPU's reference path."""
    b, hq, sq, d = q.shape
    hkv = k.shape[1]
    groups = hq // hkv
    kf = k.float().unsqueeze(2)  # (B, Hkv, 1, Sk, D): broadcast over the query group, no copy
    vf = v.float().unsqueeze(2)
    qf = q.float().reshape(b, hkv, groups, sq, d)
    outs, lses = [], []
    for lo in range(0, sq, _MATH_QUERY_CHUNK):
        hi = min(lo + _MATH_QUERY_CHUNK, sq)
        scores = torch.matmul(qf[:, :, :, lo:hi], kf.transpose(-1, -2)) * scale  # (B,Hkv,G,rows,Sk)
        if pattern.softcap:
            scores = torch.tanh(scores / pattern.softcap) * pattern.softcap
        seen = None
        if query_positions is not None:
            seen = pattern.visible(query_positions[lo:hi], key_positions, causal)
        if seen is not None:
            scores = scores.masked_fill(~seen, float("-inf"))
        lse = torch.logsumexp(scores, dim=-1)
        # a row that sees no key has lse -inf: shift it by 0 so its weights are 0, not NaN
        probs = torch.exp(scores - torch.where(torch.isinf(lse), 0.0, lse).unsqueeze(-1))
        outs.append(torch.matmul(probs, vf))
        lses.append(lse)
    out = torch.cat(outs, dim=3).reshape(b, hq, sq, v.shape[-1])
    lse = torch.cat(lses, dim=3).reshape(b, hq, sq)
    return out.to(q.dtype), lse


def _cpu_flash(q, k, v, causal: bool, scale: float):
    # Handles grouped heads itself (verified against the math kernel in the tests), but walks the
    # keys once per query head: for one decode query (14 heads over 2 KV heads) that is 25x slower
    # than folding the heads into queries (attention_with_lse does so), while with many queries
    # both run at the same speed.
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)
    return out, lse.float()


def _cudnn(q, k, v, causal: bool, scale: float):
    k, v = _expand_kv(k, q.shape[1]), _expand_kv(v, q.shape[1])
    result = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, causal, False, scale=scale)
    out, lse = result[0], result[1]
    return out, lse.reshape(q.shape[:3]).float()


def _flash_sdpa(q, k, v, causal: bool, scale: float):
    k, v = _expand_kv(k, q.shape[1]), _expand_kv(v, q.shape[1])
    result = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)
    return result[0], result[1].float()


def _flash_attn(q, k, v, causal: bool, scale: float):
    from flash_attn import flash_attn_func  # optional dependency

    # flash-attn wants (B, S, H, D) and supports grouped KV heads natively
    out, lse, _ = flash_attn_func(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=causal, return_attn_probs=True
    )
    return out.transpose(1, 2), lse.float()


_HALF_PRECISION_ONLY = ("cudnn", "flash-sdpa", "flash-attn")

_IMPLEMENTATIONS: dict[str, Callable] = {
    "math": _math,
    "cpu-flash": _cpu_flash,
    "cudnn": _cudnn,
    "flash-sdpa": _flash_sdpa,
    "flash-attn": _flash_attn,
}


def _flash_attn_installed() -> bool:
    try:
        import flash_attn  # noqa: F401
    except Exception:
        return False
    return True


def resolve_kernel(name: str, device: torch.device | str) -> str:
    """Turn ``auto`` into the fastest kernel available on ``device``; reject impossible choices."""
    device_type = torch.device(device).type
    if name not in KERNELS:
        raise KernelError(f"unknown kernel {name!r}: choose one of {', '.join(KERNELS)}")
    if name == "auto":
        if device_type == "cuda":
            if _flash_attn_installed():
                return "flash-attn"
            return "cudnn" if torch.backends.cudnn.is_available() else "flash-sdpa"
        return "cpu-flash" if device_type == "cpu" else "math"
    if name in ("cudnn", "flash-sdpa", "flash-attn") and device_type != "cuda":
        raise KernelError(f"kernel {name} needs a CUDA device")
    if name == "cpu-flash" and device_type != "cpu":
        raise KernelError("kernel cpu-flash runs on the CPU only")
    if name == "flash-attn" and not _flash_attn_installed():
        raise KernelError("kernel flash-attn is not installed (pip install flash-attn)")
    return name


# Few queries over many keys (decoding): fused kernels parallelise over heads and query tiles, so
# 8 KV heads × 1 tile would keep most of the GPU idle. Cutting the keys into chunks that run as a
# batch, then merging the chunks' partials by LSE, spreads the work (split-KV decoding).
_SPLIT_MAX_QUERIES = 64
_SPLIT_CHUNK = 4096


def _split_keys(q, k, v, scale: float, kernel: str):
    """Non-causal attention with the key axis cut into batch-parallel chunks, merged by LSE."""
    b, hkv, sk, d = k.shape
    chunks = sk // _SPLIT_CHUNK
    main = chunks * _SPLIT_CHUNK
    grouped = _group_queries(q, hkv)  # (B, Hkv, G·S, D)

    def as_batch(x):  # (B, Hkv, main, D) -> (B·chunks, Hkv, CHUNK, D), a view when x is contiguous per head
        return x[:, :, :main].reshape(b, hkv, chunks, _SPLIT_CHUNK, d).transpose(1, 2).reshape(b * chunks, hkv, _SPLIT_CHUNK, d)

    queries = grouped.unsqueeze(1).expand(b, chunks, *grouped.shape[1:]).reshape(b * chunks, *grouped.shape[1:])
    out, lse = _IMPLEMENTATIONS[kernel](queries, as_batch(k), as_batch(v), False, scale)
    out = out.reshape(b, chunks, *out.shape[1:]).transpose(0, 1)
    lse = lse.reshape(b, chunks, *lse.shape[1:]).transpose(0, 1)
    if main < sk:
        rest_out, rest_lse = _IMPLEMENTATIONS[kernel](grouped, k[:, :, main:], v[:, :, main:], False, scale)
        out = torch.cat([out, rest_out.unsqueeze(0)])
        lse = torch.cat([lse, rest_lse.unsqueeze(0)])
    merged_out, merged_lse = merge_stacked(out, lse)
    return _ungroup(merged_out, merged_lse, q.shape[1])


def attention_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float | None = None, kernel: str = "math"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of q over (k, v), returning (out (B, Hq, Sq, D), lse (B, Hq, Sq) float32).

    ``kernel`` must already be resolved (see ``resolve_kernel``).
    """
    sq, sk = q.shape[2], k.shape[2]
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if sk == 0 or sq == 0:
        return empty_partial(q)  # some kernels crash on empty key sets
    if causal and sq == 1:
        causal = False  # one query at the end of the keys sees all of them
    if causal and sq != sk:
        if sq > sk:
            raise KernelError(f"bottom-right causal attention needs Sq <= Sk, got {sq} > {sk}")
        head = attention_with_lse(q, k[:, :, : sk - sq], v[:, :, : sk - sq], causal=False, scale=scale, kernel=kernel)
        tail = attention_with_lse(q, k[:, :, sk - sq :], v[:, :, sk - sq :], causal=True, scale=scale, kernel=kernel)
        return merge_partials(*head, *tail)
    if kernel in _HALF_PRECISION_ONLY and q.dtype not in (torch.float16, torch.bfloat16):
        kernel = "math"  # the fused CUDA kernels take fp16/bf16 only
    if kernel != "math" and v.shape[-1] != q.shape[-1]:
        return _with_equal_head_sizes(q, k, v, causal, scale, kernel)
    impl = _IMPLEMENTATIONS[kernel]
    if not causal and kernel in _HALF_PRECISION_ONLY and q.shape[2] * q.shape[1] // k.shape[1] <= _SPLIT_MAX_QUERIES and sk >= 2 * _SPLIT_CHUNK:
        return _split_keys(q, k, v, scale, kernel)
    if not causal and q.shape[1] != k.shape[1] and (kernel != "cpu-flash" or sq == 1):
        out, lse = impl(_group_queries(q, k.shape[1]), k, v, False, scale)
        return _ungroup(out, lse, q.shape[1])
    return impl(q, k, v, causal, scale)


def _with_equal_head_sizes(q, k, v, causal: bool, scale: float, kernel: str):
    """Values with another head size than queries and keys (multi-head latent attention), through
    kernels that want one size: zeros appended to the smaller side change neither the scores
    (zero query/key dimensions) nor the wanted output columns (zero value dimensions)."""
    dq, dv = q.shape[-1], v.shape[-1]
    if dv < dq:
        out, lse = attention_with_lse(q, k, torch.nn.functional.pad(v, (0, dq - dv)), causal=causal, scale=scale, kernel=kernel)
        return out[..., :dv], lse
    pad = (0, dv - dq)
    return attention_with_lse(torch.nn.functional.pad(q, pad), torch.nn.functional.pad(k, pad), v, causal=causal,
                              scale=scale, kernel=kernel)


def attention_at(q, k, v, *, query_start: int, key_start: int, causal: bool, scale: float, kernel: str,
                 pattern: LayerPattern = PLAIN) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of queries at positions ``query_start``… over keys at ``key_start``…, seeing only
    what ``pattern`` lets each query see. ``causal`` calls have their keys end with the queries.

    The keys no query sees are cut off first; when every query then sees every key left, a fused
    kernel runs as for a plain layer. Otherwise the masked float32 kernel runs over chunks of
    queries, each with only the keys it may see, so a sliding window costs O(S · W), not O(S²)."""
    if pattern.plain:
        return attention_with_lse(q, k, v, causal=causal, scale=scale, kernel=kernel)
    sq, sk = q.shape[2], k.shape[2]
    query_end = query_start + sq
    key_end = key_start + sk
    first = max(key_start, pattern.first_visible(query_start))
    if first >= key_end or sq == 0:
        return empty_partial(q, v.shape[-1])
    k, v = k[:, :, first - key_start :], v[:, :, first - key_start :]
    if not pattern.softcap and pattern.first_visible(query_end - 1) <= first:
        return attention_with_lse(q, k, v, causal=causal, scale=scale, kernel=kernel)
    if causal and pattern.window_only and pattern.window > 1 and key_start == query_start and sk == sq:
        return _sliding_band(q, k, v, pattern.window, scale, kernel)
    outs, lses = [], []
    for lo in range(0, sq, _MATH_QUERY_CHUNK):
        hi = min(lo + _MATH_QUERY_CHUNK, sq)
        chunk_first = max(first, pattern.first_visible(query_start + lo))
        chunk_end = min(key_end, query_start + hi) if causal else key_end
        if chunk_first >= chunk_end:
            out, lse = empty_partial(q[:, :, lo:hi], v.shape[-1])
        else:
            keys = slice(chunk_first - first, chunk_end - first)
            out, lse = positional_attention(
                q[:, :, lo:hi], k[:, :, keys], v[:, :, keys],
                torch.arange(query_start + lo, query_start + hi, device=q.device),
                torch.arange(chunk_first, chunk_end, device=q.device), causal=causal, scale=scale, pattern=pattern,
            )
        outs.append(out)
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def split_blocks(x: torch.Tensor, count: int) -> torch.Tensor:
    """(B, H, count·L, D) -> (B·count, H, L, D)."""
    b, h, total, d = x.shape
    length = total // count
    return x.reshape(b, h, count, length, d).transpose(1, 2).reshape(b * count, h, length, d)


def join_blocks(x: torch.Tensor, count: int) -> torch.Tensor:
    """(B·count, H, L, D) -> (B, H, count·L, D)."""
    bc, h, length, d = x.shape
    return x.reshape(bc // count, count, h, length, d).transpose(1, 2).reshape(bc // count, h, count * length, d)


def join_lse(x: torch.Tensor, count: int) -> torch.Tensor:
    """(B·count, H, L) -> (B, H, count·L)."""
    bc, h, length = x.shape
    return x.reshape(bc // count, count, h, length).transpose(1, 2).reshape(bc // count, h, count * length)


def _sliding_band(q, k, v, window: int, scale: float, kernel: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention over a sliding window of the queries' own keys (k, v at the queries'
    positions) in two batched fused calls. Cut the queries into chunks of C = window - 1: a query
    sees all earlier keys of its own chunk, and of the chunk before it exactly the keys at or after
    its own offset (a query at offset i of chunk c sees c·C + i - window < key, i.e. offset ≥ i
    in chunk c - 1). Reversed in both queries and keys, that second part is plain causal attention
    too. The chunks are batched, the last one padded at its end (padded keys come after every real
    query, padded queries are dropped), and the two parts merged by log-sum-exp."""
    b, _, s, _ = q.shape
    size = window - 1
    count = -(-s // size)
    pad = count * size - s

    def chunks(x):
        return split_blocks(torch.nn.functional.pad(x, (0, 0, 0, pad)), count)

    qc, kc, vc = chunks(q), chunks(k), chunks(v)
    out, lse = attention_with_lse(qc, kc, vc, causal=True, scale=scale, kernel=kernel)

    def by_chunk(x):  # (B·count, ...) -> (B, count, ...): each batch's chunks apart
        return x.reshape(b, count, *x.shape[1:])

    def later(x):  # chunks 1.. of every batch
        return by_chunk(x)[:, 1:].flatten(0, 1)

    def earlier(x):  # chunks ..count-2 of every batch: the chunk before each of ``later``
        return by_chunk(x)[:, :-1].flatten(0, 1)

    back, back_lse = attention_with_lse(later(qc).flip(2), earlier(kc).flip(2), earlier(vc).flip(2), causal=True,
                                        scale=scale, kernel=kernel)
    merged, merged_lse = merge_partials(later(out), later(lse), back.flip(2), back_lse.flip(2))
    # kernels may hand back non-contiguous outputs: joined anew rather than written through a view
    out = torch.cat([by_chunk(out)[:, :1], merged.reshape(b, count - 1, *merged.shape[1:])], 1).flatten(0, 1)
    lse = torch.cat([by_chunk(lse)[:, :1], merged_lse.reshape(b, count - 1, *merged_lse.shape[1:])], 1).flatten(0, 1)
    return join_blocks(out, count)[:, :, :s], join_lse(lse, count)[:, :, :s]


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float, kernel: str) -> torch.Tensor:
    """Square causal attention whose LSE nobody merges (a dense pass with no earlier keys): out
    (B, Hq, S, D) only. Except for the math and flash-attn kernels this is the call transformers'
    sdpa attention makes (grouped KV heads read in place), so a dense pass costs what the model's
    own forward costs: no LSE to write and no KV heads repeated."""
    if kernel in ("math", "flash-attn") or v.shape[-1] != q.shape[-1]:
        return attention_with_lse(q, k, v, causal=True, scale=scale, kernel=kernel)[0]
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                                            enable_gqa=q.shape[1] != k.shape[1])


def attention_upto(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_end: torch.Tensor, scale: float,
                   pattern: LayerPattern = PLAIN, key_start: int = 0):
    """Causal attention of q (B, Hq, S, D) over the first ``key_end`` of the keys k/v (B, Hkv, C, D):
    query i sees keys j <= key_end - S + i. ``key_end`` is a 0-dim integer tensor on q's device, so
    the shapes depend on the buffer's capacity C alone and one captured CUDA graph serves every
    decoding step while the length moves on the device. Keys past ``key_end`` must be finite (a
    masked score is -inf, but 0 · NaN would still be NaN). Returns (out, lse) like
    ``attention_with_lse``. Slot 0 holds position ``key_start``: a ``pattern``'s window or chunk
    masks by position."""
    s = q.shape[2]
    slots = torch.arange(k.shape[2], device=q.device) + key_start
    queries = key_end - s + torch.arange(s, device=q.device) + key_start
    return positional_attention(q, k, v, queries, slots, causal=True, scale=scale, pattern=pattern)
