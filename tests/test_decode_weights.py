"""CPU decoding from int8 copies of the weights: close to the bfloat16 product, used for a few rows
only, switched off for the bench's transformers rows, and applied by the session on bfloat16 CPUs."""

import pytest
import torch
from torch import nn

from starcli.model import decode_weights
from starcli.model.decode_weights import DECODE_ROWS, Int8DecodeLinear, full_weights, int8_for_decode

from .tiny import tiny_pair

pytestmark = pytest.mark.skipif(not decode_weights.available(), reason="this torch has no int8 weight kernel")


@pytest.fixture
def tiny_star():
    return tiny_pair("qwen2")[1]


def _linear(bias: bool) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(96, 160, bias=bias).to(torch.bfloat16)


@pytest.mark.parametrize("bias", [False, True])
def test_a_few_rows_use_the_int8_copy_within_its_rounding(bias):
    linear = _linear(bias)
    wrapped = Int8DecodeLinear(linear)
    x = torch.randn(1, 3, 96, dtype=torch.bfloat16)
    reference = x.double() @ linear.weight.double().T + (linear.bias.double() if bias else 0)
    got = wrapped(x)
    assert got.shape == (1, 3, 160) and got.dtype == torch.bfloat16
    # each weight moves by at most half a step (max|w_row| / 127 / 2); the sum over 96 inputs stays within
    step = linear.weight.double().abs().amax(1) / 127
    bound = (x.double().abs().sum(-1, keepdim=True) * step / 2) + 0.02 * reference.abs() + 1e-2
    assert ((got.double() - reference).abs() <= bound).all()
    assert not torch.equal(got, linear(x))  # the int8 path really ran


def test_many_rows_use_the_weight_itself():
    linear = _linear(True)
    wrapped = Int8DecodeLinear(linear)
    long = torch.randn(DECODE_ROWS + 1, 96, dtype=torch.bfloat16)
    assert torch.equal(wrapped(long), linear(long))


def test_full_weights_switches_the_copies_off(tiny_star):
    model = tiny_star.to(torch.bfloat16)
    assert int8_for_decode(model) > 0
    x = torch.randn(1, 1, model.config.hidden_size, dtype=torch.bfloat16)
    head = model.lm_head
    with full_weights(model):
        assert torch.equal(head(x), head.linear(x))
    assert not torch.equal(head(x), head.linear(x))


def test_the_session_decodes_from_int8_in_bfloat16_on_the_cpu_only(tiny_star):
    from starcli.run.session import Session
    from starcli.star.comm import Comm

    assert not Session(tiny_star, None, Comm()).int8_decode  # float32: the exact reference
    session = Session(tiny_star.to(torch.bfloat16), None, Comm())
    assert session.int8_decode and isinstance(tiny_star.lm_head, Int8DecodeLinear)
    wrapped = [m for m in tiny_star.modules() if isinstance(m, Int8DecodeLinear)]
    assert Session(tiny_star, None, Comm()).int8_decode  # a second session on the model wraps nothing twice
    assert [m for m in tiny_star.modules() if isinstance(m, Int8DecodeLinear)] == wrapped
    encode, _ = session.encode(list(range(3, 200)), session.plan(197, block_size=64))
    tokens, stats = session.answer([5, 6], max_new_tokens=4)
    assert encode.tokens == 197 and len(tokens) == 4
