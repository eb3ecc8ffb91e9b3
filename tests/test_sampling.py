"""Greedy choice: the first of the largest logits, in any dtype, as argmax picks it."""

import pytest
import torch

from starcli.star.sampling import SamplingParams, sample_next


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_greedy_takes_the_first_largest_logit(dtype):
    torch.manual_seed(0)
    logits = torch.randn(151_936).to(dtype)
    assert sample_next(logits, SamplingParams(), None) == int(torch.argmax(logits))
    logits[[7, 90_000, 151_000]] = 50  # a tie: the first index wins
    assert sample_next(logits, SamplingParams(), None) == 7
