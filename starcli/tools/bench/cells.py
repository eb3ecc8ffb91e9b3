"""The options of a bench run, checked, and the cells it runs in order."""

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ...errors import StarcliError, UsageError
from ...star.partition import (DEFAULT_PASS_TOKENS, Partition, PartitionError, plan_auto, plan_dense, plan_ring,
                                plan_star)
from ..lengths import parse_lengths
from .shapes import SHAPES

# auto: the configuration ``--attention auto`` picks for the length, ranks and device (star.policy)
ENGINE_MODES = ("dense", "star", "ring", "auto")
HF_MODES = ("hf-dense", "hf-static")
MODES = ENGINE_MODES + HF_MODES
SINGLE_PROCESS_MODES = ("dense",) + HF_MODES
# The warm-up cell uses at most this many tokens: enough to touch every kernel path cheaply.
WARMUP_LENGTH = 2048


class BenchError(UsageError):
    """A bad option value, with a one-line message for the user."""


def parse_modes(text: str) -> list[str]:
    modes = [m.strip().lower() for m in text.split(",") if m.strip()]
    if not modes:
        raise BenchError("--modes is empty")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise BenchError(f"unknown mode {unknown[0]!r}: choose from {', '.join(MODES)}")
    return list(dict.fromkeys(modes))


@dataclass
class BenchSettings:
    lengths: list[int]
    modes: list[str]
    block_sizes: list[Optional[int]]  # None: the N/4 rule
    anchor_size: Optional[int] = None
    # star relays (tokens of the previous block); None: the engine's default (partition.DEFAULT_RELAY)
    relays: list[Optional[int]] = field(default_factory=lambda: [None])
    decodes: list[str] = field(default_factory=lambda: ["auto"])  # engine decode modes (DECODE_MODES)
    shape: Optional[str] = "tiny"
    model_path: Optional[str] = None
    device: str = "cpu"  # "cpu" or "cuda"
    dtype: str = "float32"  # a torch dtype's name
    kernel: str = "auto"
    question_tokens: int = 32
    decode_tokens: int = 32
    decode_warmup: int = 64
    repeats: int = 1
    pass_tokens: int = DEFAULT_PASS_TOKENS
    seed: int = 0
    json_path: Optional[str] = None
    matmul_size: Optional[int] = None  # None: the device's default ceiling size


@dataclass
class CellSpec:
    mode: str
    length: int
    partition: Optional[Partition] = None
    block_rule: Optional[str] = None  # "N/4" or "given" for star, "auto" for auto
    skip_reason: Optional[str] = None
    estimated_need: Optional[int] = None  # bytes, set when the cell is skipped for not fitting
    decode: Optional[str] = None  # engine cells: the decode mode

    @property
    def block(self) -> Optional[int]:
        return self.partition.block_size if self._star else None

    @property
    def anchor(self) -> Optional[int]:
        return self.partition.anchor_size if self._star else None

    @property
    def relay(self) -> Optional[int]:
        return self.partition.relay if self._star else None

    @property
    def _star(self) -> bool:
        return self.partition is not None and self.partition.attention == "star"


def plan_cells(settings: BenchSettings, world_size: int) -> list[CellSpec]:
    """Every cell in run order; raises BenchError for block/anchor settings no partition accepts."""
    cells = []
    for length in settings.lengths:
        for mode in settings.modes:
            if mode in SINGLE_PROCESS_MODES and world_size > 1:
                cells.append(CellSpec(mode, length, skip_reason=f"{mode} runs in one process"))
            elif mode in HF_MODES:
                cells.append(CellSpec(mode, length))
            elif mode == "dense":
                cells += [CellSpec(mode, length, plan_dense(length), decode=d) for d in settings.decodes]
            elif mode == "ring":
                cells += [CellSpec(mode, length, plan_ring(length, world_size), decode=d) for d in settings.decodes]
            elif mode == "auto":
                partition = plan_auto(length, world_size, settings.device)
                cells += [CellSpec(mode, length, partition, "auto", decode=d) for d in settings.decodes]
            else:
                for block in settings.block_sizes:
                    for relay in settings.relays:
                        try:
                            partition = plan_star(length, world_size, block, settings.anchor_size, relay=relay)
                        except PartitionError as exc:
                            raise BenchError(f"length {length}: {exc}") from None
                        cells += [CellSpec(mode, length, partition, "N/4" if block is None else "given", decode=d)
                                  for d in settings.decodes]
    return cells


def warmup_spec(mode: str, length: int, world_size: int, decode: Optional[str] = None) -> CellSpec:
    if mode in HF_MODES:
        return CellSpec(mode, length)
    if mode == "dense":
        return CellSpec(mode, length, plan_dense(length), decode=decode)
    if mode == "ring":
        return CellSpec(mode, length, plan_ring(length, world_size), decode=decode)
    # auto: star's warm-up, whose calls (causal and prefix attention, merges) include dense's
    return CellSpec(mode, length, plan_star(length, world_size), decode=decode)



def bench_settings(shape=None, model=None, lengths="32k,128k", modes="dense,star,ring", block_sizes=None, anchor_size=None,
                   ranks=1, device="auto", dtype="auto", kernel="auto", question_tokens=32, decode_tokens=32,
                   decode_warmup=64, repeats=1, pass_tokens=DEFAULT_PASS_TOKENS, json_path=None, seed=0,
                   matmul_size=None, relays=None, decodes="auto") -> BenchSettings:
    """The command's options (as typed) checked and read; a bad one raises BenchError."""
    import torch

    from ...app.checks import resolve_device
    from ...model.dtypes import pick_dtype
    from ...star.engine import resolve_decode
    from ...star.kernels import resolve_kernel

    if model is not None and shape is not None:
        raise BenchError("give --shape or --model, not both")
    if model is not None and not Path(model).is_dir():
        raise BenchError(f"--model {model}: not a folder")
    shape = None if model is not None else (shape or "llama3-8b")
    if shape is not None and shape not in SHAPES:
        raise BenchError(f"unknown --shape {shape!r}: choose from {', '.join(SHAPES)}")
    for name, value, least in (("--ranks", ranks, 1), ("--question-tokens", question_tokens, 1),
                               ("--decode-tokens", decode_tokens, 1), ("--decode-warmup", decode_warmup, 0),
                               ("--repeats", repeats, 1), ("--pass-tokens", pass_tokens, 1),
                               ("--matmul-size", 1 if matmul_size is None else matmul_size, 1)):
        if value < least:
            raise BenchError(f"{name} must be at least {least}, got {value}")
    length_list = parse_lengths(lengths, "--lengths")
    blocks = parse_lengths(block_sizes, "--block-sizes") if block_sizes else [None]
    anchors = parse_lengths(anchor_size, "--anchor-size") if anchor_size else [None]
    if len(anchors) != 1:
        raise BenchError("--anchor-size takes one value")
    relay_list = parse_lengths(relays, "--relays", zero=True) if relays else [None]
    resolved_device = resolve_device(device)
    try:
        dtype_name = str(pick_dtype(resolved_device, dtype)).removeprefix("torch.")
    except UsageError as exc:
        raise BenchError(f"--dtype: {exc}") from None
    try:
        resolve_kernel(kernel, resolved_device)
    except UsageError as exc:
        raise BenchError(f"--kernel: {exc}") from None
    decode_list = list(dict.fromkeys(d.strip().lower() for d in decodes.split(",") if d.strip()))
    if not decode_list:
        raise BenchError("--decodes is empty")
    try:
        for decode in decode_list:
            resolve_decode(decode, torch.device(resolved_device))
    except StarcliError as exc:  # the engine's own refusal, here a bad option
        raise BenchError(f"--decodes: {exc}") from None
    if json_path is not None:
        from ..paths import check_output_file

        check_output_file(json_path, "--json")
    return BenchSettings(
        lengths=length_list, modes=parse_modes(modes), block_sizes=list(dict.fromkeys(blocks)), anchor_size=anchors[0],
        relays=list(dict.fromkeys(relay_list)), decodes=decode_list, shape=shape,
        model_path=str(Path(model).resolve()) if model is not None else None, device=resolved_device,
        dtype=dtype_name, kernel=kernel, question_tokens=question_tokens, decode_tokens=decode_tokens,
        decode_warmup=decode_warmup, repeats=repeats, pass_tokens=pass_tokens, seed=seed,
        json_path=str(Path(json_path).resolve()) if json_path is not None else None, matmul_size=matmul_size,
    )


# set on the ranks of a multi-rank run, so that the report records the command as the user typed it
COMMAND_ENV = "STARCLI_BENCH_COMMAND"


def command_line() -> str:
    """The command as typed (``starcli bench ...`` or ``python -m starcli bench ...``), as ranks record it."""
    if COMMAND_ENV in os.environ:
        return os.environ[COMMAND_ENV]
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name.startswith("starcli"):
        return shlex.join([Path(sys.executable).name, "-m", "starcli", *sys.argv[1:]])
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
