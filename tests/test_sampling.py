"""Choosing tokens: greedy as argmax picks, top-k/top-p as their definitions say, the repetition
penalty on generated tokens only, seeded draws that repeat, and the loop guard."""

import math

import pytest
import torch

from starcli.star.sampling import (
    Sampler,
    SamplingParams,
    keep_likeliest,
    penalize_repeats,
    repeating_tail,
)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_greedy_takes_the_first_largest_logit(dtype):
    torch.manual_seed(0)
    logits = torch.randn(151_936).to(dtype)
    greedy = Sampler(SamplingParams(), torch.device("cpu"))
    assert greedy.choose(logits) == int(torch.argmax(logits))
    logits[[7, 90_000, 151_000]] = 50  # a tie: the first index wins
    assert greedy.choose(logits) == 7


def _reference_kept(scores: list[float], top_k: int, top_p: float) -> set[int]:
    """The kept token ids by the definitions, in float64 and plain Python."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    if top_k:
        order = order[:top_k]
    top = max(scores[i] for i in order)
    weights = [math.exp(scores[i] - top) for i in order]
    total = sum(weights)
    kept, mass = set(), 0.0
    for i, w in zip(order, weights):
        if mass >= top_p:
            break
        kept.add(i)
        mass += w / total
    return kept


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (5, 1.0), (0, 0.5), (20, 0.8), (3, 0.999), (0, 1e-6)])
def test_keep_likeliest_matches_the_definitions(top_k, top_p):
    torch.manual_seed(1)
    scores = torch.randn(200, dtype=torch.float64) * 2
    kept, ids = keep_likeliest(scores, top_k, top_p)
    survivors = {int(i) for i, s in zip(ids, kept) if s != float("-inf")}
    assert survivors == _reference_kept(scores.tolist(), top_k, top_p)
    assert int(ids[0]) == int(torch.argmax(scores))  # the likeliest always stays


def test_penalty_lowers_seen_tokens_either_sign_and_leaves_the_rest():
    logits = torch.tensor([2.0, -2.0, 3.0, -1.0])
    seen = torch.tensor([True, True, False, False])
    out = penalize_repeats(logits, seen, 2.0)
    assert out.tolist() == [1.0, -4.0, 3.0, -1.0]


def test_sampler_penalizes_only_what_it_generated():
    # token 0 leads by a margin a 1.5 penalty removes once it has been generated
    logits = torch.tensor([3.0, 2.5, 0.0])
    sampler = Sampler(SamplingParams(repetition_penalty=1.5), torch.device("cpu"))
    assert sampler.choose(logits) == 0  # nothing generated yet: the document's tokens never count
    assert sampler.choose(logits) == 1  # 3.0 / 1.5 = 2.0 < 2.5
    no_penalty = Sampler(SamplingParams(), torch.device("cpu"))
    assert [no_penalty.choose(logits) for _ in range(2)] == [0, 0]


def test_seeded_draws_repeat_and_follow_the_distribution():
    torch.manual_seed(2)
    logits = torch.randn(50)
    params = SamplingParams(temperature=0.9, top_k=10, top_p=0.9, seed=1234)
    first = [Sampler(params, torch.device("cpu")).choose(logits) for _ in range(5)]
    assert len(set(first)) == 1  # the same seed, the same first draw
    sampler = Sampler(SamplingParams(temperature=1.0, seed=5), torch.device("cpu"))
    draws = torch.tensor([sampler.choose(logits) for _ in range(4000)])
    frequency = torch.bincount(draws, minlength=50).double() / len(draws)
    expected = torch.softmax(logits.double(), -1)
    assert (frequency - expected).abs().max() < 0.03
    allowed = set(keep_likeliest(logits / 0.9, 10, 0.9)[1][:10].tolist())
    restricted = Sampler(params, torch.device("cpu"))
    assert {restricted.choose(logits) for _ in range(300)} <= allowed


@pytest.mark.parametrize("bad", [
    SamplingParams(temperature=float("nan")), SamplingParams(temperature=-1), SamplingParams(top_p=0),
    SamplingParams(top_p=float("nan")), SamplingParams(top_k=-1), SamplingParams(repetition_penalty=0),
    SamplingParams(repetition_penalty=float("inf")), SamplingParams(seed=2**70), SamplingParams(seed=-1),
])
def test_bad_sampling_values_are_refused(bad):
    with pytest.raises(ValueError):
        bad.validate()


def test_loop_guard_stops_a_repeated_sentence_and_keeps_varied_text():
    sentence = list(range(100, 120))  # a 20-token sentence
    assert repeating_tail(list(range(60)) + sentence * 2) is None  # twice is not yet a loop
    assert repeating_tail(list(range(60)) + sentence * 3) == 20
    assert repeating_tail([5] * 47) is None and repeating_tail([7] + [5] * 48) == 1
    # a short run of equal tokens (a rule of dashes) inside varied text is not a loop
    assert repeating_tail(list(range(40)) + [9] * 12 + list(range(200, 240))) is None
    assert repeating_tail(list(range(1000))) is None
