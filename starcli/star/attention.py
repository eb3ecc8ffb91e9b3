"""The attention function starcli registers with transformers, and the per-run state it works on.

transformers calls ``star_attention_forward(module, q, k, v, mask, **kwargs)`` in every attention
layer with q (B, Hq, S, D) and k/v (B, Hkv, S, D) of the tokens in the current forward pass
(positions already applied; starcli runs models with ``use_cache=False`` and keeps the KV itself).
The engine passes an ``AttentionState`` as the ``star_state`` keyword; its current ``step`` says
what the pass is:

- ``BlocksStep``: one or more whole star blocks. Block 0 attends causally to itself (its first
  tokens are the anchor); every other block attends to the anchor plus, causally, itself. The
  anchor's KV is computed once, by rank 0 inside block 0, and broadcast layer by layer during
  every rank's first pass, so the other ranks never encode the anchor themselves and start as
  soon as rank 0 has finished the anchor's first layer. With relay, a block also attends to the
  last tokens of the previous block through the KV that block produced in the same layer (written
  to the document buffer before any attention of the pass, so a previous block in the same pass
  or an earlier pass reads the same way).
- ``DenseChunkStep``: a chunk of the document attending to all earlier document KV plus itself
  (chunked prefill of full causal attention).
- ``RingStep``: this rank's zigzag chunks; KV of all ranks is gathered and each chunk attends to
  every earlier token exactly (the context-parallel baseline).
- ``GenerateStep``: phase 2. Queries attend to the document KV held here; the last rank also
  holds the question/answer KV ("tail") and attends to it causally. Partials are all-gathered and
  merged by log-sum-exp, so every rank ends with the exact global result. With a device-side
  ``tail_length`` the step has the same shapes every time (a preallocated tail masked by length),
  which is what lets the one-token step run as a captured CUDA graph.

A layer with a sliding window, a chunk or a soft cap (``masks.LayerPattern``) attends by token
position in every step (each call knows where its queries and keys sit in the document); a layer
with attention sinks gets them once its partials are merged (``attend``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import split_kv
from .comm import Comm
from .kernels import (attention_at, attention_upto, attention_with_lse, causal_attention, empty_partial, join_blocks,
                      join_lse, positional_attention, split_blocks)
from .masks import PLAIN, LayerPattern, layer_pattern
from .merge import merge_many, merge_partials
from .merge_into import merge_into

ATTENTION_NAME = "star"
# Question + answer KV up to this many tokens is attended with the math kernel (see _generate).
_SHORT_TAIL = 4096
# Up to this many query rows (query heads per KV head × question tokens) a prefill goes through the
# split-KV kernels too; longer questions have enough rows for the fused kernels to fill the GPU.
_SPLIT_KV_ROWS = 1024


@dataclass
class BlocksStep:
    lengths: list[int]  # of each block in this pass, in document order
    starts_with_block0: bool
    anchor_size: int
    # per block (same order), tokens before it whose cached KV it also attends to; empty: none
    relays: list[int] = field(default_factory=list)
    # several ranks with relay: tokens at the end of this pass that the next rank's first block
    # relays (sent), and tokens of the previous rank's last block this pass's first block relays
    relay_to_next_rank: int = 0
    relay_from_previous_rank: int = 0


@dataclass
class DenseChunkStep:
    # the pass ends with this many tokens of the first question, which ride along with the
    # document's last pass: their KV goes to ``AttentionState.question``, not the document
    question_tokens: int = 0


@dataclass
class RingStep:
    local_ranges: list[tuple[int, int]]  # this rank's chunks, [start, end) in the document
    rank_ranges: list[list[tuple[int, int]]]  # every rank's chunks, for placing gathered KV
    num_tokens: int


@dataclass
class GenerateStep:
    # None: the tail grows by this step's tokens at ``tail.filled`` (eager). A 0-dim integer device
    # tensor: the tokens already in a preallocated tail, so the step has fixed shapes and can be
    # captured in a CUDA graph (see starcli.star.graphs)
    tail_length: torch.Tensor | None = None
    # the queries' positions: a device tensor (S,) on every path, and the first as an int when the
    # host knows it (eager); layers with a window or chunk mask by them
    positions: torch.Tensor | None = None
    query_start: int | None = None


@dataclass(frozen=True)
class LayerShape:
    """A layer's KV heads and head sizes (values may differ from keys: multi-head latent attention)."""

    heads: int
    key_dim: int
    value_dim: int


@dataclass
class KVBuffer:
    """Preallocated per-layer K/V of shape (B, Hkv, capacity, D); ``filled`` tokens are valid."""

    capacity: int
    keys: dict[int, torch.Tensor] = field(default_factory=dict)
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    filled: int = 0

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, offset: int) -> None:
        if layer not in self.keys:
            b, h, _, d = k.shape
            self.keys[layer] = k.new_empty(b, h, self.capacity, d)
            self.values[layer] = v.new_empty(b, h, self.capacity, v.shape[-1])
        end = offset + k.shape[2]
        if end > self.capacity:
            raise RuntimeError(f"KV buffer overflow: {end} > {self.capacity} tokens")
        self.keys[layer][:, :, offset:end] = k
        self.values[layer][:, :, offset:end] = v

    def allocate(self, shapes: dict[int, "LayerShape"], dtype: torch.dtype, device: torch.device) -> None:
        """Every layer's K/V at full capacity now, as zeros: a captured graph needs fixed addresses,
        and masked attention over not yet written slots needs finite values there."""
        for layer, shape in shapes.items():
            self.keys[layer] = torch.zeros(1, shape.heads, self.capacity, shape.key_dim, dtype=dtype, device=device)
            self.values[layer] = torch.zeros(1, shape.heads, self.capacity, shape.value_dim, dtype=dtype, device=device)

    def read(self, layer: int, end: int | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        if layer not in self.keys:
            return None
        end = self.filled if end is None else end
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class AttentionState:
    """Everything the registered attention function needs for one document on one rank."""

    def __init__(self, comm: Comm, kernel: str):
        self.comm = comm
        self.kernel = kernel
        self.step = None
        self.document = KVBuffer(0)
        self.anchor = KVBuffer(0)
        self.tail = KVBuffer(0)
        self.question = KVBuffer(0)  # a question encoded with the document's last pass (DenseChunkStep)
        self.anchor_in_document = False  # rank 0: the anchor is the start of the document buffer
        # phase 2 through split_kv's kernels (set by the engine where they run: CUDA with Triton)
        self.split_kv = False
        # positions [start, end) of the document buffer's consecutive stretches (one for star and
        # dense, a rank's two chunks for ring), and the document's length: where its tail begins
        self.document_ranges: list[tuple[int, int]] = [(0, 0)]
        self.total_tokens = 0
        self.lse_wanted = False  # the current layer has sinks: every step returns its LSE

    # --- helpers -------------------------------------------------------------------------------
    def _attend(self, q, k, v, causal: bool, scale: float, query_start: int = 0, key_start: int = 0,
                pattern: LayerPattern = PLAIN):
        return attention_at(q, k, v, query_start=query_start, key_start=key_start, causal=causal, scale=scale,
                            kernel=self.kernel, pattern=pattern)

    def _anchor_kv(self, layer: int, like: torch.Tensor, like_values: torch.Tensor, anchor_size: int):
        if self.anchor_in_document:
            return self.document.read(layer, end=anchor_size)
        if layer not in self.anchor.keys:
            self.receive_anchor(layer, like, anchor_size, like_values)
        return self.anchor.read(layer)

    def receive_anchor(self, layer: int, like: torch.Tensor, anchor_size: int, like_values: torch.Tensor | None = None) -> None:
        """This layer's anchor K/V from rank 0, which holds block 0 (see ``_blocks``)."""
        b, h, _, d = like.shape
        dv = d if like_values is None else like_values.shape[-1]
        self.anchor.capacity = self.anchor.filled = anchor_size
        self.anchor.keys[layer] = self.comm.broadcast_(like.new_empty(b, h, anchor_size, d), src=0)
        self.anchor.values[layer] = self.comm.broadcast_(like.new_empty(b, h, anchor_size, dv), src=0)

    # --- steps ----------------------------------------------------------------------------------
    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
               pattern: LayerPattern = PLAIN, sinks: torch.Tensor | None = None) -> torch.Tensor:
        """Output (B, Hq, S, Dv) of this layer for the current step. ``sinks`` (Hq,): a learned
        score per head that joins every query's softmax denominator once (gpt-oss); it enters
        after every partial is merged, since each partial's LSE covers only its own keys."""
        step = self.step
        self.lse_wanted = sinks is not None
        if isinstance(step, GenerateStep):
            out, lse = self._generate(layer, q, k, v, scale, pattern)
        elif isinstance(step, BlocksStep):
            out, lse = self._blocks(layer, q, k, v, scale, step, pattern)
        elif isinstance(step, DenseChunkStep):
            out, lse = self._dense_chunk(layer, q, k, v, scale, pattern)
        elif isinstance(step, RingStep):
            out, lse = self._ring(layer, q, k, v, scale, step, pattern)
        else:
            raise RuntimeError("star attention called outside an engine step")
        if sinks is not None:
            # softmax over [scores, sink] without the sink's column: out · e^lse / (e^lse + e^sink)
            weight = torch.sigmoid(lse - sinks.float()[None, :, None])
            out = (out.float() * weight.unsqueeze(-1)).to(out.dtype)
        return out

    def _blocks(self, layer, q, k, v, scale, step: BlocksStep, pattern: LayerPattern):
        base = self.document.filled  # where this pass's first block lands in the document buffer
        start = self.document_ranges[0][0] + base  # its position in the document
        self.document.write(layer, k, v, base)
        out = q.new_empty(*q.shape[:3], v.shape[-1])
        lse = torch.empty(q.shape[:3], device=q.device, dtype=torch.float32)
        pos = 0
        lengths = list(step.lengths)
        relays = list(step.relays) or [0] * len(lengths)
        if step.starts_with_block0:
            if self.comm.distributed:  # the other ranks are waiting for this layer's anchor
                self.comm.broadcast_(k[:, :, : step.anchor_size].contiguous(), src=0)
                self.comm.broadcast_(v[:, :, : step.anchor_size].contiguous(), src=0)
            first = lengths.pop(0)
            relays.pop(0)
            out[:, :, :first], lse[:, :, :first] = self._attend(q[:, :, :first], k[:, :, :first], v[:, :, :first], True, scale,
                                                                start, start, pattern)
            pos = first
        # other ranks receive the anchor before any point-to-point transfer, so that every rank
        # issues its communication in the same order (broadcast, then neighbours)
        anchor = self._anchor_kv(layer, k, v, step.anchor_size) if lengths else None
        from_previous_rank = self._exchange_relay(k, v, step, layer, base)
        if not lengths:
            return out, lse
        anchor_k, anchor_v = anchor
        kept = base + pos  # buffer offset of the current block
        # a chunked layer's mask depends on where a block starts, not only on its length: one at a time
        for length, count in _runs(lengths, batch=pattern.chunk is None):
            span = slice(pos, pos + length * count)
            # local causal attention of each block to itself, the blocks batched along dim 0 (a
            # window's mask is relative, so every block of the run takes the first one's positions)
            local_out, local_lse = self._attend(
                split_blocks(q[:, :, span], count), split_blocks(k[:, :, span], count),
                split_blocks(v[:, :, span], count), True, scale, start + pos, start + pos, pattern,
            )
            local_out, local_lse = join_blocks(local_out, count), join_lse(local_lse, count)
            # every block sees the whole anchor: one non-causal call for all of them; the merges
            # write straight into this pass's output
            merge_into(out[:, :, span], lse[:, :, span], local_out, local_lse,
                       *self._attend(q[:, :, span], anchor_k, anchor_v, False, scale, start + pos, 0, pattern))
            batched = count > 1 and kept > 0 and pattern.chunk is None and all(r == length for r in relays[:count])
            if batched:
                # every block relays the whole previous block, and the first one's is in this rank's
                # buffer: the blocks' previous blocks are one stretch of it, so one batched call
                # (as the local one) replaces a call and a merge per block
                del relays[:count]
                keys, values = self.document.read(layer, end=kept + (count - 1) * length)
                earlier = slice(kept - length, kept + (count - 1) * length)
                relay_out, relay_lse = self._attend(
                    split_blocks(q[:, :, span], count), split_blocks(keys[:, :, earlier], count),
                    split_blocks(values[:, :, earlier], count), False, scale, start + pos, start + pos - length, pattern,
                )
                merge_into(out[:, :, span], lse[:, :, span], out[:, :, span], lse[:, :, span],
                           join_blocks(relay_out, count), join_lse(relay_lse, count))
            for j in range(0 if batched else count):
                relay = relays.pop(0)
                if relay:
                    own = slice(j * length, (j + 1) * length)
                    offset = kept + j * length
                    if offset == 0:  # this rank's first block: the previous block is on the previous rank
                        if from_previous_rank is None:
                            raise RuntimeError("relay needs the previous block's KV")
                        relayed = from_previous_rank
                    else:
                        relayed = [x[:, :, offset - relay : offset] for x in self.document.read(layer, end=offset)]
                    rows = slice(pos + own.start, pos + own.stop)
                    relay_out, relay_lse = self._attend(q[:, :, rows], *relayed, False, scale, start + rows.start,
                                                        start + rows.start - relay, pattern)
                    merge_into(out[:, :, rows], lse[:, :, rows], out[:, :, rows], lse[:, :, rows], relay_out, relay_lse)
            pos += length * count
            kept += length * count
        return out, lse

    def _exchange_relay(self, k, v, step: BlocksStep, layer: int, base: int) -> list[torch.Tensor] | None:
        """Several ranks with relay: this layer's K/V of this pass's last ``relay_to_next_rank`` kept
        tokens to the next rank; returns the previous rank's ``relay_from_previous_rank`` (K, V)."""
        send = receive = None
        if step.relay_to_next_rank:
            end = base + sum(step.lengths)
            keys, values = self.document.read(layer, end=end)
            send = [keys[:, :, end - step.relay_to_next_rank :], values[:, :, end - step.relay_to_next_rank :]]
        if step.relay_from_previous_rank:
            b, h, _, d = k.shape
            count = step.relay_from_previous_rank
            receive = [k.new_empty(b, h, count, d), v.new_empty(b, h, count, v.shape[-1])]
        self.comm.exchange_with_neighbours(send, receive)
        return receive

    def _dense_chunk(self, layer, q, k, v, scale, pattern: LayerPattern):
        offset = self.document.filled
        start = self.document_ranges[0][0]
        earlier = self.document.read(layer, end=offset)
        own = k.shape[2] - self.step.question_tokens
        self.document.write(layer, k[:, :, :own], v[:, :, :own], offset)
        if self.step.question_tokens:
            self.question.write(layer, k[:, :, own:], v[:, :, own:], 0)
        if (earlier is None or offset == 0) and pattern.plain and not self.lse_wanted:
            # nothing to merge with and no sink to weigh: no LSE needed
            return causal_attention(q, k, v, scale=scale, kernel=self.kernel), None
        own = self._attend(q, k, v, True, scale, start + offset, start + offset, pattern)
        if earlier is None or offset == 0:
            return own
        past = self._attend(q, earlier[0], earlier[1], False, scale, start + offset, start, pattern)
        return merge_partials(*own, *past)

    def _ring(self, layer, q, k, v, scale, step: RingStep, pattern: LayerPattern):
        self.document.write(layer, k, v, 0)
        lengths = [sum(e - s for s, e in ranges) for ranges in step.rank_ranges]
        gathered_k = self.comm.all_gather_varlen(k, lengths, dim=2)
        gathered_v = self.comm.all_gather_varlen(v, lengths, dim=2)
        b, h, _, d = k.shape
        full_k = k.new_empty(b, h, step.num_tokens, d)
        full_v = v.new_empty(b, h, step.num_tokens, v.shape[-1])
        for ranges, kk, vv in zip(step.rank_ranges, gathered_k, gathered_v):
            pos = 0
            for s, e in ranges:
                full_k[:, :, s:e] = kk[:, :, pos : pos + e - s]
                full_v[:, :, s:e] = vv[:, :, pos : pos + e - s]
                pos += e - s
        out = q.new_empty(*q.shape[:3], v.shape[-1])
        lse = torch.empty(q.shape[:3], device=q.device, dtype=torch.float32)
        pos = 0
        for s, e in step.local_ranges:
            span = slice(pos, pos + e - s)
            own = self._attend(q[:, :, span], k[:, :, span], v[:, :, span], True, scale, s, s, pattern)
            if s > 0:
                past = self._attend(q[:, :, span], full_k[:, :, :s], full_v[:, :, :s], False, scale, s, 0, pattern)
                own = merge_partials(*own, *past)
            out[:, :, span], lse[:, :, span] = own
            pos += e - s
        return out, lse

    def _generate(self, layer, q, k, v, scale, pattern: LayerPattern):
        tail_length = self.step.tail_length
        if (self.split_kv and pattern.window_only and q.shape[-1] == v.shape[-1]
                and (tail_length is not None or q.shape[1] // k.shape[1] * q.shape[2] <= _SPLIT_KV_ROWS)):
            return self._generate_split_kv(layer, q, k, v, scale, tail_length, pattern)
        partials = []
        held = self.document.read(layer)
        if held is not None and held[0].shape[2]:
            if pattern.plain:
                partials.append(self._attend(q, held[0], held[1], False, scale))
            else:
                partials.extend(self._document_in_view(q, held, scale, pattern))
        if self.comm.is_last:
            partials.append(self._attend_tail(layer, q, k, v, scale, tail_length, pattern))
        partial = partials[0] if partials else empty_partial(q, v.shape[-1])
        for more in partials[1:]:
            partial = merge_partials(*partial, *more)
        outs, lses = self.comm.all_gather_partials(*partial)
        return merge_many(outs, lses)

    def _document_stretches(self, held, pattern: LayerPattern):
        """(first position, keys, values) of each stretch of the document buffer that phase 2's
        queries can see. Every query of phase 2 comes after the document, so keys before
        ``first_visible(total_tokens)`` are never seen and are not read."""
        offset = 0
        for start, end in self.document_ranges:
            keys, values = (x[:, :, offset : offset + end - start] for x in held)
            offset += end - start
            first = max(start, pattern.first_visible(self.total_tokens))
            if first < end:
                yield first, keys[:, :, first - start :], values[:, :, first - start :]

    def _document_in_view(self, q, held, scale, pattern: LayerPattern) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Partials of phase 2's queries over the document keys a window or chunk lets them see."""
        partials = []
        for first, keys, values in self._document_stretches(held, pattern):
            end = first + keys.shape[2]
            if self.step.query_start is not None:
                partials.append(self._attend(q, keys, values, False, scale, self.step.query_start, first, pattern))
            else:  # fixed shapes: the positions move on the device, the mask follows them there
                partials.append(positional_attention(q, keys, values, self.step.positions,
                                                     torch.arange(first, end, device=q.device), causal=False,
                                                     scale=scale, pattern=pattern))
        return partials

    def _generate_split_kv(self, layer, q, k, v, scale, tail_length: torch.Tensor | None, pattern: LayerPattern):
        """Document and tail in one two-kernel split-KV attention (CUDA): the captured step, whose
        tail length is on the device, and a short question's prefill, whose offset is known here.
        A sliding-window layer reads only the document's last ``window`` keys; the kernels drop
        those each query's window has left behind, by the slot of its own position."""
        segments = []
        window = pattern.window
        held = self.document.read(layer)
        if held is not None and held[0].shape[2]:
            if window is None:
                segments.append(split_kv.Segment(*held))
            else:
                for first, keys, values in self._document_stretches(held, pattern):
                    # the first query's position, counted from this stretch's first slot
                    own = (tail_length + (self.total_tokens - first) if tail_length is not None
                           else self.step.query_start - first)
                    segments.append(split_kv.Segment(keys, values, window=window, first_query=own))
        if self.comm.is_last:
            if tail_length is None:
                keys, values = self._grow_tail(layer, k, v)
                valid, own = None, keys.shape[2] - q.shape[2]
            else:
                keys, values = self._write_tail(layer, k, v, tail_length)
                valid, own = tail_length + q.shape[2], tail_length
            segments.append(split_kv.Segment(keys, values, valid=valid, causal=True, window=window, first_query=own))
        partial = split_kv.split_kv_attention(q, segments, scale) if segments else empty_partial(q)
        outs, lses = self.comm.all_gather_partials(*partial)
        return merge_many(outs, lses)

    def _grow_tail(self, layer, k, v) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's K/V appended at ``tail.filled``; the tail's K/V through them."""
        start = self.tail.filled
        self.tail.write(layer, k, v, start)
        return self.tail.read(layer, end=start + k.shape[2])

    def _write_tail(self, layer, k, v, tail_length: torch.Tensor):
        """This step's K/V into the preallocated tail at a device-side offset; the whole buffers."""
        index = tail_length + torch.arange(k.shape[2], device=k.device)
        keys, values = self.tail.keys[layer], self.tail.values[layer]
        keys.index_copy_(2, index, k)
        values.index_copy_(2, index, v)
        return keys, values

    def _attend_tail(self, layer, q, k, v, scale, tail_length: torch.Tensor | None, pattern: LayerPattern):
        """This step's tokens into the question/answer KV, then their causal attention over it."""
        if tail_length is not None:
            # fixed shapes: write at a device-side offset, attend over the whole buffer up to the new end
            keys, values = self._write_tail(layer, k, v, tail_length)
            return attention_upto(q, keys, values, tail_length + q.shape[2], scale, pattern, key_start=self.total_tokens)
        tail_k, tail_v = self._grow_tail(layer, k, v)
        if not pattern.plain:
            return self._attend(q, tail_k, tail_v, True, scale, self.step.query_start, self.total_tokens, pattern)
        # The tail grows by one token per step; shape-specialised fused kernels (cuDNN builds a
        # plan per shape) would pay setup every step, while this short attention is cheap in math.
        kernel = "math" if tail_k.shape[2] <= _SHORT_TAIL else self.kernel
        return attention_with_lse(q, tail_k, tail_v, causal=True, scale=scale, kernel=kernel)


def _runs(lengths: list[int], batch: bool = True) -> list[tuple[int, int]]:
    """Consecutive equal lengths as (length, count): full blocks batch together, a short last one
    apart; without ``batch`` every block on its own."""
    runs: list[tuple[int, int]] = []
    for n in lengths:
        if batch and runs and runs[-1][0] == n:
            runs[-1] = (n, runs[-1][1] + 1)
        else:
            runs.append((n, 1))
    return runs


def star_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, star_state=None, **kwargs):
    """The function registered as ``attn_implementation="star"`` (transformers' attention interface)."""
    if star_state is None:
        raise RuntimeError("attn_implementation='star' needs the starcli engine (star_state keyword missing)")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    layer = module.layer_idx
    pattern = layer_pattern(module.config, layer, kwargs.get("sliding_window"), kwargs.get("softcap"))
    sinks = kwargs.get("s_aux")
    if sinks is None:
        sinks = kwargs.get("sinks")
    out = star_state.attend(layer, query, key, value, scaling, pattern, sinks)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Register with transformers (idempotent). Mask creation is skipped for unknown names, which is
    what we want: masks here are structural, never materialised."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, star_attention_forward)
