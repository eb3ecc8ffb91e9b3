"""Cut a document's tokens into blocks, pick the anchor, and assign blocks to ranks.

Star Attention (phase 1) encodes block 0 alone with causal attention and every other block with
the first ``anchor_size`` tokens of block 0 (the anchor) in front of it. Blocks are contiguous and
handed to ranks in order, as evenly as possible. Ring attention (the exact baseline) instead holds
two chunks per rank in "zigzag" order, so that causal work is balanced across ranks.

Everything here is plain integers: no tensors, no model, trivially testable.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError

BLOCK_MULTIPLE = 128
# A forward pass of phase 1 holds at most this many document tokens (but always at least one whole
# block): bounds activation memory without making passes too small to run at full speed.
DEFAULT_PASS_TOKENS = 32768
# On a GPU a pass takes the whole document where this many times its estimated activations fit
# (``pass_size``).
_ACTIVATION_MARGIN = 2
# Tokens of the previous block whose cached KV each block also attends to. None: the whole previous
# block when the blocks come from the default rule (the configuration that keeps star within 5% of
# dense on the default model, docs/accuracy.md), none with explicit block sizes (chosen for speed).
DEFAULT_RELAY = None


def pass_size(tokens: int, pass_tokens: int, activation_bytes_per_token: int, kv_bytes_per_token: int,
              free_bytes: int) -> int:
    """Most tokens in one phase-1 pass: all ``tokens`` when twice their estimated activations fit
    in ``free_bytes`` beside the KV still to be allocated for them, as transformers' own forward
    takes a prompt; else ``pass_tokens``. Twice: a margin over an estimate that was itself above
    what it estimates (transformers' forward of the Llama-3.1-8B shape at 128K peaked 14.6 GiB
    above its weights, the estimate says 17.5; docs/bench/bench-h100-128k.txt). More passes cost
    more: a dense pass after the first attends to the earlier ones through the LSE kernel and a
    merge (128K in one pass 1.002x transformers' forward against 1.065x in passes of 32K, one H100,
    docs/benchmarks.md), and star batches its blocks only within a pass."""
    if tokens <= pass_tokens:
        return pass_tokens
    needed = tokens * (kv_bytes_per_token + _ACTIVATION_MARGIN * activation_bytes_per_token)
    return tokens if needed <= free_bytes else pass_tokens


class PartitionError(UsageError):
    """Invalid block/anchor/rank settings, with a one-line message for the user."""


@dataclass(frozen=True)
class Block:
    """Tokens [start, end) of the document, whose KV is kept.

    ``relay`` (star with relay) is how many tokens before ``start`` the block attends to through
    their cached KV, as the previous block computed it in the same layer: nothing is encoded twice,
    and since that KV already saw the block before it, what a block sees reaches back one block per
    layer. It makes block i wait, layer by layer, for block i-1.
    """

    index: int
    start: int
    end: int
    relay: int = 0

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class RankPlan:
    """What one rank encodes in phase 1 and keeps for phase 2.

    ``blocks`` are the document ranges whose KV this rank keeps. For star they are contiguous and
    ``needs_anchor`` says whether the rank must compute the anchor itself (every rank except the one
    holding block 0, whose first tokens are the anchor). For ring, ``blocks`` are the rank's two
    zigzag chunks.
    """

    rank: int
    blocks: tuple[Block, ...]
    needs_anchor: bool

    @property
    def num_tokens(self) -> int:
        return sum(b.length for b in self.blocks)


@dataclass(frozen=True)
class Partition:
    num_tokens: int
    block_size: int
    anchor_size: int
    world_size: int
    attention: str
    ranks: tuple[RankPlan, ...]
    relay: int = 0
    # why ``--attention auto`` chose this configuration (policy.choose); "" when it was given
    reason: str = ""

    @property
    def blocks(self) -> tuple[Block, ...]:
        return tuple(b for r in self.ranks for b in r.blocks)

    @property
    def num_blocks(self) -> int:
        return sum(len(r.blocks) for r in self.ranks)


def default_block_size(num_tokens: int) -> int:
    """About N/4, rounded to a multiple of 128 (at least 128): the paper's accuracy-preserving choice."""
    quarter = num_tokens / 4
    return max(BLOCK_MULTIPLE, int(round(quarter / BLOCK_MULTIPLE)) * BLOCK_MULTIPLE)


ATTENTIONS = ("auto", "star", "dense", "ring")


def check_options(attention: str, block_size: int | None, anchor_size: int | None, relay: int | None) -> None:
    """The attention and block settings as given, before the document's length is known: the one
    place these rules live (the command checks them before any work, the planners again)."""
    for name, value in (("block-size", block_size), ("anchor-size", anchor_size)):
        if value is not None and value <= 0:
            raise PartitionError(f"--{name} must be a positive number of tokens, got {value}")
    if relay is not None and relay < 0:
        raise PartitionError(f"--relay must not be negative, got {relay}")
    if attention not in ATTENTIONS:
        raise PartitionError(f"--attention must be {', '.join(ATTENTIONS[:-1])} or {ATTENTIONS[-1]}, got {attention!r}")


def _check_sizes(num_tokens: int, world_size: int) -> None:
    if num_tokens <= 0:
        raise PartitionError("the document has no tokens")
    if world_size <= 0:
        raise PartitionError(f"world size must be positive, got {world_size}")


def split_evenly(count: int, parts: int) -> list[tuple[int, int]]:
    """[start, end) index ranges cutting ``count`` items into ``parts`` contiguous runs, sizes differing by ≤ 1."""
    return [(p * count // parts, (p + 1) * count // parts) for p in range(parts)]


def _front_loaded(count: int, parts: int) -> list[tuple[int, int]]:
    """Like ``split_evenly`` but earlier parts take the remainder: the last rank, which also holds
    the question and answer KV, gets the fewest blocks."""
    base, extra = divmod(count, parts)
    ranges, start = [], 0
    for p in range(parts):
        size = base + (1 if p < extra else 0)
        ranges.append((start, start + size))
        start += size
    return ranges


def plan_star(
    num_tokens: int, world_size: int = 1, block_size: int | None = None, anchor_size: int | None = None,
    relay: int | None = DEFAULT_RELAY,
) -> Partition:
    """Blocks of ``block_size`` (last one partial, never dropped), anchor ≤ block, contiguous ranks.

    ``relay``: each block after the anchor also attends to the cached KV of up to this many tokens
    at the end of the previous block (never anchor tokens; ``None``: see ``DEFAULT_RELAY``).
    A document shorter than one block is one block: star attention is then exactly dense attention.
    """
    _check_sizes(num_tokens, world_size)
    check_options("star", block_size, anchor_size, relay)
    if relay is None:
        relay = default_block_size(num_tokens) if block_size is None else 0
    block_size = block_size or default_block_size(num_tokens)
    anchor_size = anchor_size or block_size
    if anchor_size > block_size:
        raise PartitionError(f"--anchor-size ({anchor_size}) must not exceed --block-size ({block_size})")
    starts = list(range(0, num_tokens, block_size))
    ends = starts[1:] + [num_tokens]
    # the anchor is the first tokens of block 0, so it cannot be longer than block 0 itself
    anchor_size = min(anchor_size, ends[0])
    blocks = [
        Block(
            i, s, e,
            # within the previous block only, so that block i depends on block i-1 alone
            relay=max(0, s - max(anchor_size, starts[i - 1], s - relay)) if i else 0,
        )
        for i, (s, e) in enumerate(zip(starts, ends))
    ]
    ranks = []
    for rank, (lo, hi) in enumerate(_front_loaded(len(blocks), world_size)):
        mine = tuple(blocks[lo:hi])
        holds_block0 = bool(mine) and mine[0].index == 0
        ranks.append(RankPlan(rank, mine, needs_anchor=bool(mine) and not holds_block0))
    return Partition(num_tokens, block_size, anchor_size, world_size, "star", tuple(ranks), relay)


def plan_dense(num_tokens: int, chunk_size: int | None = None) -> Partition:
    """Full causal attention in one process; ``chunk_size`` only bounds memory (chunked prefill)."""
    _check_sizes(num_tokens, 1)
    chunk_size = chunk_size or num_tokens
    blocks = tuple(Block(i, s, min(s + chunk_size, num_tokens)) for i, s in enumerate(range(0, num_tokens, chunk_size)))
    return Partition(num_tokens, chunk_size, 0, 1, "dense", (RankPlan(0, blocks, needs_anchor=False),))


def plan_ring(num_tokens: int, world_size: int) -> Partition:
    """Zigzag context parallelism: 2·W chunks, rank r holds chunks r and 2W-1-r.

    With causal attention, chunk c costs about c units of work, so pairing an early chunk with a late
    one gives every rank the same total: the honest, load-balanced exact baseline.
    """
    _check_sizes(num_tokens, world_size)
    num_chunks = 2 * world_size
    chunks = [Block(i, s, e) for i, (s, e) in enumerate(split_evenly(num_tokens, num_chunks))]
    ranks = []
    for rank in range(world_size):
        mine = tuple(c for c in (chunks[rank], chunks[num_chunks - 1 - rank]) if c.length > 0)
        ranks.append(RankPlan(rank, mine, needs_anchor=False))
    chunk_len = -(-num_tokens // num_chunks)
    return Partition(num_tokens, chunk_len, 0, world_size, "ring", tuple(ranks))


def plan_partition(
    attention: str, num_tokens: int, world_size: int = 1, block_size: int | None = None, anchor_size: int | None = None,
    relay: int | None = DEFAULT_RELAY, device_type: str = "cpu",
) -> Partition:
    """The partition of ``attention`` (``auto``: ``plan_auto`` on ``device_type``)."""
    check_options(attention, block_size, anchor_size, relay)
    if attention == "auto":
        return plan_auto(num_tokens, world_size, device_type, block_size, anchor_size, relay)
    if attention == "star":
        return plan_star(num_tokens, world_size, block_size, anchor_size, relay)
    if attention == "ring":
        return plan_ring(num_tokens, world_size)
    if world_size != 1:  # dense
        raise PartitionError("--attention dense runs in one process; use star or ring with several ranks")
    return plan_dense(num_tokens)


def plan_auto(num_tokens: int, world_size: int, device_type: str, block_size: int | None = None,
              anchor_size: int | None = None, relay: int | None = None) -> Partition:
    """``--attention auto``: the configuration ``policy.choose`` picks for this length, rank count and
    device, with its reason. Block options given with it ask for star blocks: star with them."""
    from dataclasses import replace

    from .policy import choose

    _check_sizes(num_tokens, world_size)
    given = [f"--{name}" for name, value in (("block-size", block_size), ("anchor-size", anchor_size), ("relay", relay))
             if value is not None]
    if given:
        partition = plan_star(num_tokens, world_size, block_size, anchor_size, relay)
        return replace(partition, reason=f"{' and '.join(given)} given: star with those blocks")
    choice = choose(num_tokens, world_size, device_type)
    if choice.attention == "dense":
        partition = plan_dense(num_tokens)
    else:
        partition = plan_star(num_tokens, world_size, choice.block_size, None, choice.relay)
    return replace(partition, reason=choice.reason)


def reason_line(requested: str, partition: Partition) -> str:
    """Why the run uses ``partition``'s attention, as the report says it: auto's reason, or given."""
    return f"auto: {partition.reason}" if requested == "auto" else f"given: --attention {requested}"
