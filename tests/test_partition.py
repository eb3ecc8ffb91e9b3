import pytest

from starcli.star.partition import PartitionError, default_block_size, plan_partition, plan_ring, plan_star


def covered(partition):
    ranges = sorted((b.start, b.end) for r in partition.ranks for b in r.blocks)
    pos = 0
    for s, e in ranges:
        assert s == pos and e > s
        pos = e
    return pos


@pytest.mark.parametrize("n,world", [(1, 1), (100, 1), (1000, 2), (1001, 3), (5000, 4), (129, 5)])
def test_star_covers_every_token_once(n, world):
    p = plan_star(n, world, block_size=128)
    assert covered(p) == n
    # contiguous blocks per rank, in rank order, sizes differ by at most one block
    counts = [len(r.blocks) for r in p.ranks]
    assert max(counts) - min(counts) <= 1
    order = [b.index for r in p.ranks for b in r.blocks]
    assert order == sorted(order)
    # only ranks without block 0 compute the anchor
    for r in p.ranks:
        assert r.needs_anchor == (bool(r.blocks) and r.blocks[0].index != 0)


def test_last_partial_block_is_kept():
    p = plan_star(300, 1, block_size=128)
    assert [b.length for b in p.ranks[0].blocks] == [128, 128, 44]


def test_short_document_is_one_block_and_anchor_clamped():
    p = plan_star(50, 1, block_size=128, anchor_size=100)
    assert p.num_blocks == 1 and p.anchor_size == 50


def test_defaults_follow_the_paper():
    assert default_block_size(16000) == 4000 // 128 * 128 + 0 or default_block_size(16000) % 128 == 0
    assert default_block_size(131072) == 32768
    p = plan_star(131072, 4)
    assert p.block_size == 32768 and p.anchor_size == 32768 and p.num_blocks == 4


def test_default_relay_is_the_whole_block_with_default_blocks():
    p = plan_star(16384)
    assert p.relay == p.block_size == 4096
    assert [b.relay for b in p.blocks] == [0, 0, 4096, 4096]  # block 1's predecessor is the anchor
    assert plan_star(16384, block_size=4096).relay == 0  # explicit blocks are chosen for speed: plain star
    assert plan_star(16384, 2).relay == 4096  # several ranks hand the relayed KV over layer by layer
    assert plan_star(16384, relay=0).relay == 0


def test_bad_sizes_raise():
    with pytest.raises(PartitionError):
        plan_star(100, 1, block_size=0)
    with pytest.raises(PartitionError):
        plan_star(100, 1, block_size=64, anchor_size=65)
    with pytest.raises(PartitionError):
        plan_partition("dense", 100, world_size=2)
    with pytest.raises(PartitionError):
        plan_partition("nope", 100)


@pytest.mark.parametrize("n,world", [(10, 1), (100, 2), (101, 3), (1000, 4)])
def test_ring_zigzag(n, world):
    p = plan_ring(n, world)
    assert covered(p) == n
    sizes = [r.num_tokens for r in p.ranks]
    assert max(sizes) - min(sizes) <= 2
    for rank, plan in enumerate(p.ranks):
        assert [b.index for b in plan.blocks] == [rank, 2 * world - 1 - rank]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_star_blocks_are_cut_every_block_size(world):
    p = plan_star(1000, world, 128, 64)
    kept = [t for b in p.blocks for t in range(b.start, b.end)]
    assert kept == list(range(1000))
    assert [b.start for b in p.blocks] == list(range(0, 1000, 128)) and p.anchor_size == 64


def test_pass_size_takes_the_whole_document_only_where_it_fits_twice_over():
    from starcli.star.partition import pass_size

    # 100 tokens of 10 bytes of activations and 4 of KV: 100 * (4 + 2 * 10) = 2,400 bytes needed
    assert pass_size(100, 32, 10, 4, 2400) == 100
    assert pass_size(100, 32, 10, 4, 2399) == 32
    assert pass_size(20, 32, 10, 4, 0) == 32  # within one pass anyway: memory is not asked
