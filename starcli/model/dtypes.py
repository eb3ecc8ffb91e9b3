"""The dtype a run computes in: ``--dtype`` names, and what ``auto`` picks on each device."""

from __future__ import annotations

from typing import Any

from ..errors import UsageError


_DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX-BF16 on x86).

    Without these instructions torch converts bf16 to float32 around every multiply, and bf16 runs
    several times slower than float32 (see ``pick_dtype``); with them it runs faster. ARM's bf16
    extensions are left out until measured.
    """
    import torch

    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def auto_dtype_reason(device: str) -> str:
    """Why ``--dtype auto`` picked what it did on ``device``, for the run report."""
    if str(device).startswith("cuda"):
        return "auto: half precision on GPUs"
    if cpu_has_fast_bf16():
        return "auto: this CPU multiplies bfloat16 natively"
    return "auto: this CPU has no native bfloat16 matmul"


def pick_dtype(device: str, requested: str | None) -> Any:
    """The torch dtype to run in: an explicit name is honoured, None/"auto" picks per device.

    Auto is bfloat16 on CUDA (float16 on GPUs without bf16), bfloat16 on CPUs with native bf16
    matmul (``cpu_has_fast_bf16``) and float32 on other CPUs.
    """
    import torch

    if requested is None or requested.strip().lower() == "auto":
        if str(device).startswith("cuda"):
            try:
                if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
                    return torch.float16
            except Exception:  # no usable CUDA runtime: load_model reports it properly
                pass
            return torch.bfloat16
        # Without native bf16, bf16 runs emulated: on a 2-core AVX2 machine one 512-token forward
        # of a random model of Qwen2.5-0.5B's shape took 8.7 s in float32 and 47.4 s in bfloat16.
        # With AVX-512 BF16 (2-core AMD EPYC) the bench's matmul probe gives 0.67 TFLOP/s bf16
        # against 0.2 float32, and on a quiet machine the default model's 4K time to first token
        # went from 25.9 s to 13.4 s.
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    name = _DTYPE_NAMES.get(requested.strip().lower())
    if name is None:
        raise UsageError(f"unknown dtype {requested!r}; use auto, float32, bfloat16 or float16")
    return getattr(torch, name)


