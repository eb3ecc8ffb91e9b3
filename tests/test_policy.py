"""``--attention auto``: the measured tables and how the partition planner follows them."""

import pytest

from starcli.star import policy
from starcli.star.partition import PartitionError, plan_partition, plan_star, reason_line


@pytest.mark.parametrize("table", [policy.ONE_GPU, policy.CPU])
def test_tables_cover_every_length_in_order(table):
    firsts = [first for first, _, _ in table]
    assert firsts[0] == 0 and firsts == sorted(set(firsts))
    assert all(choice.attention in ("dense", "star") for _, choice, _ in table)


def _crossover(table) -> int:
    return next(first for first, choice, _ in table if choice.attention == "star")


def test_one_gpu_dense_below_the_crossover_then_fixed_blocks_with_relay():
    start = _crossover(policy.ONE_GPU)
    for n in (1, 2048, 30000, start - 1):
        choice = policy.choose(n, 1, "cuda")
        assert choice.attention == "dense" and "one GPU" in choice.reason
    for n in (start, 131072, 1 << 20):
        choice = policy.choose(n, 1, "cuda")
        assert (choice.attention, choice.block_size, choice.relay) == ("star", 16384, 16384)
        assert "16K blocks + relay" in choice.reason


def test_cpu_keeps_dense_where_star_was_not_faster():
    for n in (1000, 32768, 1 << 20):
        choice = policy.choose(n, 1, "cpu")
        assert choice.attention == "dense" and "CPU" in choice.reason


def test_several_ranks_keep_blocks_per_rank():
    for device in ("cuda", "cpu"):
        choice = policy.choose(1000, 4, device)
        assert (choice.attention, choice.block_size, choice.relay) == ("star", None, None)
        assert choice.reason.startswith("4 ranks")


def test_fixed_blocks_with_relay_are_dense_attention_up_to_three_blocks():
    """Why auto never picks star below 48K: each block sees the anchor (block 0), the whole previous
    block and itself, which is every earlier token while there are at most three blocks."""
    for n in (32768, 49152):
        partition = plan_star(n, 1, policy.FIXED_BLOCK, None, policy.FIXED_BLOCK)
        assert all(partition.anchor_size + b.relay == b.start for b in partition.blocks[1:])
    partition = plan_star(65536, 1, policy.FIXED_BLOCK, None, policy.FIXED_BLOCK)
    assert partition.anchor_size + partition.blocks[3].relay < partition.blocks[3].start


def test_plan_partition_follows_the_choice_and_says_why():
    long = plan_partition("auto", 131072, 1, device_type="cuda")
    assert (long.attention, long.block_size, long.relay, long.num_blocks) == ("star", 16384, 16384, 8)
    assert reason_line("auto", long) == f"auto: {long.reason}" and long.reason
    short = plan_partition("auto", 4096, 1, device_type="cuda")
    assert short.attention == "dense" and short.ranks[0].blocks[0].length == 4096
    ranks = plan_partition("auto", 131072, 4, device_type="cuda")
    assert (ranks.attention, ranks.block_size, ranks.relay) == ("star", 32768, 32768)
    # what was given is said so, and has no reason of auto's
    given = plan_partition("dense", 4096)
    assert given.reason == "" and reason_line("dense", given) == "given: --attention dense"


def test_block_options_with_auto_mean_star_with_those_blocks():
    partition = plan_partition("auto", 4096, 1, block_size=512, device_type="cuda")
    assert (partition.attention, partition.block_size, partition.relay) == ("star", 512, 0)
    assert partition.reason == "--block-size given: star with those blocks"
    relayed = plan_partition("auto", 4096, 1, block_size=512, relay=256, device_type="cpu")
    assert relayed.attention == "star" and relayed.relay == 256 and "--block-size and --relay" in relayed.reason
    with pytest.raises(PartitionError, match="--anchor-size"):
        plan_partition("auto", 4096, 1, block_size=512, anchor_size=1024)
