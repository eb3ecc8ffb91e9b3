"""CPU decoding from int8 copies of the weights: close to the bfloat16 product with either kernel,
used for a few rows only, switched off for the bench's transformers rows, and applied by the
session on bfloat16 CPUs."""

import copy

import pytest
import torch
from torch import nn

from starcli.model import decode_weights
from starcli.model.decode_weights import DECODE_ROWS, Int8DecodeLinear, full_weights, int8_for_decode, quantize_rows

from .tiny import tiny_pair

pytestmark = pytest.mark.skipif(not decode_weights.available(), reason="this torch has no int8 weight kernel")

KINDS = [kind for kind, present in (("dynamic", decode_weights._x86_engine_present()),
                                    ("weight-only", hasattr(torch, "_weight_int8pack_mm"))) if present]


@pytest.fixture
def tiny_star():
    return tiny_pair("qwen2")[1]


def _linear(bias: bool) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(96, 160, bias=bias).to(torch.bfloat16)


def test_rows_are_quantized_to_the_nearest_step_of_their_own_scale():
    torch.manual_seed(0)
    weight = torch.randn(5000, 64, dtype=torch.bfloat16)  # more rows than one quantizing slice
    weight[3] = 0  # an all-zero row keeps a positive scale
    q, scale = quantize_rows(weight)
    exact = weight.double() / scale.double()[:, None]
    assert q.dtype == torch.int8 and (q.abs() <= 127).all() and (scale > 0).all()
    assert (q.double() - exact).abs().max() <= 0.5 + 1e-4  # float32 division
    assert (q.abs().amax(1)[torch.arange(5000) != 3] == 127).all() and (q[3] == 0).all()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [False, True])
def test_a_few_rows_use_the_int8_copy_within_its_rounding(kind, bias):
    linear = _linear(bias)
    wrapped = Int8DecodeLinear(linear, kind)
    x = torch.randn(1, 3, 96, dtype=torch.bfloat16)
    w = linear.weight.double()
    reference = x.double() @ w.T + (linear.bias.double() if bias else 0)
    got = wrapped(x)
    assert got.shape == (1, 3, 160) and got.dtype == torch.bfloat16
    # each weight moves by at most half its row's step (max|w_row| / 127 / 2), and with the dynamic
    # kernel each activation by half of its row's 8-bit step ((max - min) / 255 / 2)
    weight_step = w.abs().amax(1) / 127
    bound = x.double().abs().sum(-1, keepdim=True) * weight_step / 2
    if kind == "dynamic":
        x_rows = x.double().reshape(3, 96)
        x_step = (x_rows.amax(1).clamp(min=0) - x_rows.amin(1).clamp(max=0)) / 255
        bound = bound + (x_step[:, None] / 2 * w.abs().sum(1)[None, :]).reshape(1, 3, 160) * 1.01
    bound = bound + 0.01 * reference.abs() + 1e-2  # the bfloat16 result
    assert ((got.double() - reference).abs() <= bound).all()
    assert not torch.equal(got, linear(x))  # the int8 path really ran


@pytest.mark.parametrize("kind", KINDS)
def test_many_rows_use_the_weight_itself(kind):
    linear = _linear(True)
    wrapped = Int8DecodeLinear(linear, kind)
    long = torch.randn(DECODE_ROWS + 1, 96, dtype=torch.bfloat16)
    assert torch.equal(wrapped(long), linear(long))


def test_without_the_x86_engine_the_weight_only_kernel_is_used(monkeypatch):
    monkeypatch.setattr(decode_weights, "_x86_engine_present", lambda: False)
    expected = "weight-only" if hasattr(torch, "_weight_int8pack_mm") else None
    assert decode_weights.kernel() == expected


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


def test_copies_saved_with_the_model_are_the_ones_loaded(tiny_star, tmp_path, monkeypatch):
    model = tiny_star.to(torch.bfloat16)
    decode_weights.save_copies(model, tmp_path)
    from safetensors.torch import load_file, save_file

    stored = load_file(str(tmp_path / decode_weights.COPIES_FILE))
    head = model.lm_head.weight.detach()
    assert torch.equal(stored["lm_head.q"], quantize_rows(head)[0])  # what loading would make itself
    # copies that agree with the weights are used as stored: only the three checked rows of each
    # layer are quantized again at load
    quantized_rows = []
    real = decode_weights.quantize_rows
    monkeypatch.setattr(decode_weights, "quantize_rows", lambda w: quantized_rows.append(w.shape[0]) or real(w))
    int8_for_decode(copy.deepcopy(model), tmp_path)
    assert quantized_rows and max(quantized_rows) <= 3
    # a copy of the right shape left from other weights is not used: that layer is quantized afresh
    stored["lm_head.q"] = torch.zeros_like(stored["lm_head.q"])
    stored["model.layers.0.mlp.up_proj.q"] = stored["model.layers.0.mlp.up_proj.q"][:1]
    save_file(stored, str(tmp_path / decode_weights.COPIES_FILE))
    quantized_rows.clear()
    int8_for_decode(model, tmp_path)
    assert head.shape[0] in quantized_rows
    x = torch.randn(1, head.shape[1], dtype=torch.bfloat16)
    assert not (model.lm_head(x) == 0).all()
    assert torch.allclose(model.lm_head(x).float(), model.lm_head.linear(x).float(), atol=0.05, rtol=0.05)
    up = model.model.layers[0].mlp.up_proj
    assert torch.allclose(up(x).float(), up.linear(x).float(), atol=0.05, rtol=0.05)
