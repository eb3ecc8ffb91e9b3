"""CPU decoding from 8-bit copies of the weights.

A decoding step multiplies one token's activations by every weight matrix of the model once, so on
a CPU its time is the time to read the weights: about 1 GB in bfloat16 for the default model, of
which the 152K-row LM head alone is 272 MB. ``int8_for_decode`` gives every linear layer of the
decoder and the LM head an int8 copy of its weight (one scale per output row, symmetric), used
for inputs of at most ``DECODE_ROWS`` rows; longer inputs (phase 1, the question's prefill) keep
the bfloat16 weight, where the matrix-matrix product is faster.

Two int8 kernels, the first one available wins:

- ``dynamic``: torch's quantized engine for x86 (``quantized::linear_dynamic``), which quantizes
  the activation row to 8 bits on the fly (one scale per row) and multiplies int8 by int8 with the
  processor's integer dot-product instructions. On the 2-core development machine (AVX-512, 2
  threads, one row, hot caches) it reads weights at 26-80 GB/s: the LM head in 5.2 ms, a 4864 x 896
  MLP matrix in 0.07 ms.
- ``weight-only``: ``torch._weight_int8pack_mm`` (bfloat16 activations, int8 weights): LM head
  11.5 ms, MLP matrix 0.14 ms on the same machine; used where the x86 engine is missing (ARM).

Against bfloat16 (F.linear: LM head 19-26 ms, MLP matrix 0.30-0.44 ms) both are faster up to a few
rows; at 8 rows the weight-only kernel is even with bfloat16 and at 16 rows it is slower.
Per-row int8 of bfloat16 weights moves each weight by at most half a step (0.4% of the row's
largest value); the 8-bit activation adds about as much again. On the default model, teacher-forced
over a 64-token answer at 4K, the dynamic kernel's next-token choice agreed with bfloat16's at every
step (KL 0.001 on average), as did the weight-only kernel's (KL 0.0003); the GGUF's own 5- and
8-bit quantization of that model is coarser than either.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

# inputs of at most this many rows use the int8 copy (see the measurements above)
DECODE_ROWS = 4


def _x86_engine_present() -> bool:
    return "x86" in torch.backends.quantized.supported_engines and hasattr(torch.ops.quantized, "linear_dynamic")


def kernel() -> str | None:
    """The int8 kernel this torch offers: ``dynamic``, ``weight-only`` or None."""
    if _x86_engine_present():
        return "dynamic"
    if hasattr(torch, "_weight_int8pack_mm"):
        return "weight-only"
    return None


def available() -> bool:
    return kernel() is not None


# rows quantized at a time: a float32 copy of the whole LM head would be 545 MB, and a slice that
# stays in the processor's caches makes quantizing 10 x faster (0.3 s against 2.7 s for that head)
_QUANTIZE_ROWS = 4096


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight, float32 scale per row): symmetric, round to nearest, max|row| -> 127."""
    scale = (weight.abs().amax(1).float() / 127).clamp(min=torch.finfo(torch.float32).tiny)
    q_weight = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)
    for start in range(0, weight.shape[0], _QUANTIZE_ROWS):
        rows = slice(start, start + _QUANTIZE_ROWS)
        q_weight[rows] = weight[rows].float().div_(scale[rows, None]).round_().clamp_(-127, 127)
    return q_weight, scale


class Int8DecodeLinear(nn.Module):
    """``linear`` as it was, plus an int8 copy of its weight for inputs of a few rows; ``copy``: the
    (int8 weight, scale) made at conversion, else it is quantized here. The dynamic kernel's copy
    must be packed (``pack``) before the first use."""

    def __init__(self, linear: nn.Linear, kind: str | None = None,
                 copy: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.linear = linear
        self.active = True  # False: the bfloat16 weight for every input (see ``full_weights``)
        self.kind = kind or kernel()
        weight = linear.weight.detach()
        q_weight, scale = copy if copy is not None else quantize_rows(weight)
        if self.kind == "dynamic":
            self._unpacked: tuple[torch.Tensor, torch.Tensor] | None = (q_weight, scale)
            self._packed = None
        else:
            self.register_buffer("q_weight", q_weight, persistent=False)
            self.register_buffer("q_scale", scale.to(weight.dtype), persistent=False)

    def pack(self) -> None:
        """The x86 engine's packed form of the copy (its kernels take nothing else). Call it with
        the x86 engine selected (``_x86_engine``)."""
        if self.kind != "dynamic" or self._unpacked is None:
            return
        q_weight, scale = self._unpacked
        zero_points = torch.zeros(q_weight.shape[0], dtype=torch.long)
        bias = None if self.linear.bias is None else self.linear.bias.detach().float()
        with warnings.catch_warnings():
            # torch 2.13 marks its quantized tensor type deprecated; the engine's kernels take
            # nothing else, and ``kernel()`` falls back to the weight-only kernel once they go
            warnings.simplefilter("ignore", UserWarning)
            quantized = torch._make_per_channel_quantized_tensor(q_weight, scale.double(), zero_points, 0)
            self._packed = torch.ops.quantized.linear_prepack(quantized, bias)
        self._unpacked = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows > DECODE_ROWS or not self.active or x.dtype != self.linear.weight.dtype:
            return self.linear(x)
        flat = x.reshape(rows, x.shape[-1])
        if self.kind == "dynamic":
            if self._packed is None:  # a layer wrapped on its own, outside ``int8_for_decode``
                with _x86_engine():
                    self.pack()
            # float32 in and out: the engine's own format (the activation is quantized inside)
            out = torch.ops.quantized.linear_dynamic(flat.float(), self._packed, False).to(x.dtype)
        else:
            out = torch._weight_int8pack_mm(flat.contiguous(), self.q_weight, self.q_scale)
            if self.linear.bias is not None:
                out = out + self.linear.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])


@contextlib.contextmanager
def _x86_engine() -> Iterator[None]:
    # the packed format belongs to the engine that packed it; x86 is torch's default on x86 CPUs
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


# The int8 copies a conversion writes beside the model's weights (``save_copies``), so that loading
# only reads them: ``{module}.q`` (int8, out x in) and ``{module}.scale`` (float32, out) per layer.
COPIES_FILE = "decode_int8.safetensors"


def _linear_layers(model) -> list[tuple[str, nn.Module, str, nn.Linear]]:
    """(qualified name, parent, attribute, layer) of every linear layer not wrapped yet."""
    return [(f"{parent_name}.{name}" if parent_name else name, parent, name, child)
            for parent_name, parent in model.named_modules() for name, child in parent.named_children()
            if isinstance(child, nn.Linear) and not isinstance(parent, Int8DecodeLinear)]


def save_copies(model, folder) -> None:
    """Write the int8 copy of every linear layer of ``model`` to ``folder/COPIES_FILE``."""
    from safetensors.torch import save_file

    tensors = {}
    for name, _parent, _attr, layer in _linear_layers(model):
        tensors[f"{name}.q"], tensors[f"{name}.scale"] = quantize_rows(layer.weight.detach())
    save_file(tensors, str(Path(folder) / COPIES_FILE))


def _stored_copies(folder) -> dict[str, torch.Tensor]:
    path = Path(folder) / COPIES_FILE if folder is not None else None
    if path is None or not path.is_file():
        return {}
    from safetensors.torch import load_file

    try:
        return load_file(str(path))  # memory-mapped: only the layers used are read
    except Exception:  # noqa: BLE001 - an unreadable file only costs the time to quantize again
        return {}


def int8_for_decode(model, folder=None) -> int:
    """Wrap the decoder's linear layers and the LM head in ``Int8DecodeLinear`` (CPU, bfloat16);
    returns how many were wrapped. The original weights stay: phase 1 and the KV are unchanged.
    The copies come from ``folder``'s ``COPIES_FILE`` where it holds one of the right shape that
    agrees with the layer's weight (``_agrees``)."""
    # a layer already wrapped (a second session on the same model) keeps its copy
    targets = _linear_layers(model)
    stored = _stored_copies(folder) if targets else {}
    kind = kernel()
    for name, parent, attr, layer in targets:
        q_weight, scale = stored.get(f"{name}.q"), stored.get(f"{name}.scale")
        fits = (q_weight is not None and scale is not None and q_weight.dtype == torch.int8
                and q_weight.shape == layer.weight.shape and scale.shape == layer.weight.shape[:1]
                and _agrees(layer.weight.detach(), q_weight, scale))
        setattr(parent, attr, Int8DecodeLinear(layer, kind, (q_weight, scale) if fits else None))
    _pack_all([getattr(parent, attr) for _name, parent, attr, _layer in targets])
    return len(targets)


def _agrees(weight: torch.Tensor, q_weight: torch.Tensor, scale: torch.Tensor) -> bool:
    """Whether a stored copy is the copy of ``weight``: its first, middle and last rows quantized
    again must match exactly (quantizing is deterministic), so copies left from other weights are
    made afresh instead of used."""
    rows = sorted({0, weight.shape[0] // 2, weight.shape[0] - 1})
    again, again_scale = quantize_rows(weight[rows])
    return torch.equal(again, q_weight[rows]) and torch.equal(again_scale, scale[rows])


def _pack_all(layers: list[Int8DecodeLinear]) -> None:
    """Pack every copy, largest first, on as many threads as torch uses: the packing kernel runs
    on one core, and the LM head alone is half of the model's packing time."""
    from concurrent.futures import ThreadPoolExecutor

    order = sorted(layers, key=lambda layer: -layer.linear.weight.numel())
    with _x86_engine(), ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        list(pool.map(Int8DecodeLinear.pack, order))


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
