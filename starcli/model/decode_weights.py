"""CPU decoding from 8-bit copies of the weights.

A decoding step multiplies one token's activations by every weight matrix of the model once, so on
a CPU its time is the time to read the weights: about 1 GB in bfloat16 for the default model, of
which the 152K-row LM head alone is 272 MB. ``int8_for_decode`` gives every linear layer of the
decoder and the LM head an int8 copy of its weight (one scale per output row, symmetric), used
for inputs of at most ``DECODE_ROWS`` rows; longer inputs (phase 1, the question's prefill) keep
the bfloat16 weight, where the matrix-matrix product is faster. Measured on the 2-core development
machine (AVX-512 BF16, 2 threads, torch's ``_weight_int8pack_mm``): a 4864 x 896 MLP matrix times
one row 0.44 ms in bfloat16 against 0.14 ms in int8; the LM head 26 ms against 12 ms; at 8 rows
the two are even and at 16 rows int8 is slower.

Per-row int8 of bfloat16 weights changes each product by about 0.4% of the weight's largest
value (the rounding step), far below what the GGUF 4- and 6-bit quantization of the default model
already did to its weights.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

# inputs of at most this many rows use the int8 copy (see the measurements above)
DECODE_ROWS = 4


class Int8DecodeLinear(nn.Module):
    """``linear`` as it was, plus an int8 copy of its weight for inputs of a few rows."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear
        self.active = True  # False: the bfloat16 weight for every input (see ``full_weights``)
        weight = linear.weight.detach()
        scale = (weight.abs().amax(1).float() / 127).clamp(min=torch.finfo(torch.float32).tiny)
        self.register_buffer("q_weight", (weight.float() / scale[:, None]).round().clamp(-127, 127).to(torch.int8),
                             persistent=False)
        self.register_buffer("q_scale", scale.to(weight.dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows > DECODE_ROWS or not self.active or x.dtype != self.q_scale.dtype:
            return self.linear(x)
        out = torch._weight_int8pack_mm(x.reshape(rows, x.shape[-1]).contiguous(), self.q_weight, self.q_scale)
        if self.linear.bias is not None:
            out = out + self.linear.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])


def available() -> bool:
    return hasattr(torch, "_weight_int8pack_mm")


def int8_for_decode(model) -> int:
    """Wrap the decoder's linear layers and the LM head in ``Int8DecodeLinear`` (CPU, bfloat16);
    returns how many were wrapped. The original weights stay: phase 1 and the KV are unchanged."""
    # a layer already wrapped (a second session on the same model) keeps its copy
    targets = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if isinstance(child, nn.Linear) and not isinstance(parent, Int8DecodeLinear)]
    for parent, name, child in targets:
        setattr(parent, name, Int8DecodeLinear(child))
    return len(targets)


@contextlib.contextmanager
def full_weights(model) -> Iterator[None]:
    """The model as loaded, int8 copies unused: the bench's transformers rows measure transformers."""
    wrapped = [m for m in model.modules() if isinstance(m, Int8DecodeLinear)]
    for module in wrapped:
        module.active = False
    try:
        yield
    finally:
        for module in wrapped:
            module.active = True
