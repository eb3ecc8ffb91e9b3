"""What a cell costs: FLOPs of phase 1 under each attention pattern, and the memory a rank needs.

Everything is counted from a model's config and a partition (plain integers), so the counts are
testable against explicit masks and usable before anything runs.
"""

from typing import Optional

from ...star.dims import ModelDims
from ...star.partition import Partition

GIB = 1024**3


def _triangle(n: int) -> int:
    """Score entries of causal self-attention over n tokens (diagonal included)."""
    return n * (n + 1) // 2


def score_entries(partition: Partition, rank: int) -> int:
    """(query, key) pairs ``rank`` computes in phase 1 under ``partition``'s attention pattern.

    star: block 0 causal; every other block sees the whole anchor (a·|b|), its relayed tokens of the
    previous block (r·|b|) and itself causally (the anchor's KV comes from rank 0, so no rank
    encodes it twice). dense and ring: exact causal attention, a chunk [s, e) costing its own triangle plus (e - s)·s for the tokens before it.
    """
    plan = partition.ranks[rank]
    if partition.attention == "star":
        a = partition.anchor_size
        total = 0
        for block in plan.blocks:
            total += _triangle(block.length) + (0 if block.index == 0 else (a + block.relay) * block.length)
        return total
    return sum(_triangle(b.length) + b.length * b.start for b in plan.blocks)


def linear_tokens(partition: Partition, rank: int) -> int:
    """Tokens ``rank`` pushes through the projections and MLPs in phase 1: its own blocks, never the
    anchor, which rank 0 encodes inside block 0."""
    return sum(b.length for b in partition.ranks[rank].blocks)


def phase1_parts(dims: ModelDims, partition: Partition) -> list[tuple[int, int]]:
    """(matmul FLOPs 2·P·tokens, attention FLOPs over the method's score entries) of phase 1 on each rank."""
    return [(2 * dims.linear_params * linear_tokens(partition, r), dims.attention_flops(score_entries(partition, r)))
            for r in range(partition.world_size)]


def phase1_flops(dims: ModelDims, partition: Partition) -> list[int]:
    """FLOPs of phase 1 on each rank: 2·P·tokens + attention over the method's score entries."""
    return [linear + attention for linear, attention in phase1_parts(dims, partition)]


def forward_parts(dims: ModelDims, tokens: int) -> tuple[int, int]:
    """(matmul FLOPs, attention FLOPs) of one causal forward of ``tokens`` tokens with logits for
    the last one only (the hf-dense row)."""
    return 2 * dims.linear_params * tokens + 2 * dims.hidden * dims.vocab, dims.attention_flops(_triangle(tokens))


def forward_flops(dims: ModelDims, tokens: int) -> int:
    return sum(forward_parts(dims, tokens))


def estimate_cell_bytes(
    dims: ModelDims, partition: Optional[Partition], rank: int, *, dtype_bytes: int, weight_bytes: int,
    pass_tokens: int, tail_tokens: int, hf_tokens: int = 0,
) -> int:
    """Rough memory one rank would need for a cell (reported when it runs out of memory).

    Weights + the KV this rank keeps (document share, anchor, question/answer tail) + the live
    activations of the largest forward pass (residual, q/k/v, MLP intermediates of one layer) +
    for ring the whole sequence's K/V of one layer, gathered and then assembled.
    """
    kv_per_token = 2 * dims.layers * dims.kv_heads * dims.head_dim * dtype_bytes
    per_token_act = dims.activation_per_token
    if partition is None:  # one transformers forward, no cache kept
        return weight_bytes + hf_tokens * per_token_act * dtype_bytes
    plan = partition.ranks[rank]
    kept = plan.num_tokens + (tail_tokens if rank == partition.world_size - 1 else 0)
    extra = 0
    if partition.attention == "star":
        kept += partition.anchor_size if plan.needs_anchor else 0
        largest, current = 0, 0
        for block in plan.blocks:  # whole blocks grouped up to pass_tokens, as the engine does
            current = current + block.length if current and current + block.length <= pass_tokens else block.length
            largest = max(largest, current)
        pass_size = max(largest, partition.anchor_size)
    elif partition.attention == "dense":
        pass_size = min(partition.num_tokens, pass_tokens)
    else:
        pass_size = plan.num_tokens
        extra = 2 * 2 * dims.kv_heads * dims.head_dim * partition.num_tokens * dtype_bytes
    return weight_bytes + kept * kv_per_token + pass_size * per_token_act * dtype_bytes + extra

