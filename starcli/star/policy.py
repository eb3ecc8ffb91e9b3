"""``--attention auto``: which attention a document gets, from measured speed and accuracy.

Star Attention only pays where it skips enough attention work to cover its extra kernel calls and
merges. With fixed 16K blocks, anchor = block and relay = block, a block sees the anchor, the whole
previous block and itself: up to 48K tokens that is every earlier token (exactly dense attention,
only cut into more calls), and beyond it each block skips more of the document. Smaller blocks
are faster still but measured less accurate at 64K (docs/accuracy.md). Several ranks keep the
blocks-per-rank split every multi-rank run has used (N/4 blocks, relay = block).

Plain integers and strings only, like ``partition``: the tables below are the whole rule, with the
measurements each row rests on (docs/benchmarks.md, "Issue 30"; docs/accuracy.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Choice:
    """A configuration and the one line that says why. ``block_size``/``relay`` None: the
    partition's defaults (N/4 blocks, relay = block)."""

    attention: str
    block_size: int | None = None
    relay: int | None = None
    reason: str = ""


FIXED_BLOCK = 16384
_DENSE = Choice("dense")
_STAR_FIXED = Choice("star", FIXED_BLOCK, FIXED_BLOCK)

# (first document length, configuration, why), shortest first. One GPU (the 0.5B shape, ratios to
# transformers' forward in one run; docs/benchmarks.md, "Issue 30"). With the whole document in
# one dense pass (one H100, 2026-12-07): dense 0.997-1.015 at 8K-64K, where star 16K + relay was
# slower (1.139 at 30K, 1.039 at 64K against dense 0.997); at 80K star 0.939 against dense 1.000,
# at 96K 0.839 against 0.995, at 128K 0.700 against 1.002. Its accuracy: 0.990 of dense at 64K and
# 0.958 at 128K (16 samples per task, docs/accuracy.md); 8K + relay, faster, measured 0.76 at 64K.
ONE_GPU = (
    (0, _DENSE, "on one GPU below {next} tokens dense: star there attends to (nearly) every earlier token "
                "in more calls"),
    (81920, _STAR_FIXED, "from {first} tokens on one GPU star with 16K blocks + relay (0.70x transformers' "
                         "time at 128K; accuracy 0.99 of dense at 64K, 0.96 at 128K)"),
)
# The CPU (the 2-core machine, bfloat16, the default 0.5B shape; docs/benchmarks.md, "Issue 30"):
# star with N/4 blocks + relay took 1.22-1.89x dense's time at 4K-16K and 1.04x at 32K. Longer
# documents take hours there and were not measured: dense, exact, until they are.
CPU = (
    (0, _DENSE, "on the CPU star was not faster than dense at 4K-32K tokens"),
)


def _tokens(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def choose(num_tokens: int, world_size: int = 1, device_type: str = "cpu") -> Choice:
    """The configuration ``--attention auto`` runs for a document of ``num_tokens`` on
    ``world_size`` ranks of ``device_type`` ("cuda" or "cpu"), with its reason."""
    if world_size > 1:
        return Choice("star", reason=f"{world_size} ranks: star with N/4 blocks + relay, blocks spread over the ranks")
    table = ONE_GPU if device_type == "cuda" else CPU
    index = max(i for i, (first, _, _) in enumerate(table) if num_tokens >= first)
    first, choice, why = table[index]
    following = table[index + 1][0] if index + 1 < len(table) else None
    reason = why.format(first=_tokens(first), next=_tokens(following) if following else "")
    return Choice(choice.attention, choice.block_size, choice.relay, reason)
