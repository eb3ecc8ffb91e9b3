"""The development commands: ``bench`` (speed) and ``eval`` (accuracy). Options only; the work is
in ``starcli.tools``, loaded when the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..star.partition import DEFAULT_PASS_TOKENS
from .boundary import run_command

# named here so that --help loads no model code; a test checks they are the bench's shapes
BENCH_SHAPES = ("llama3-8b", "qwen2.5-0.5b", "gemma3-4b", "gemma3-4b-global", "tiny")
KERNEL_NAMES = "auto, flash-attn, cudnn, flash-sdpa, cpu-flash or math"


def _run_tool(module: str, function: str, options: dict) -> None:
    """Call ``starcli.tools.<module>.<function>`` with the command's options (its parameters bear the
    same names), behind the error boundary."""
    import importlib

    debug = options.pop("debug")
    run_command(debug, lambda: getattr(importlib.import_module(f"..tools.{module}", __package__), function)(**options))


def bench(
    shape: Annotated[Optional[str], typer.Option("--shape", help=f"Random-weight model shape: {', '.join(BENCH_SHAPES)} (default llama3-8b).")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="A model folder to load instead of a random shape.")] = None,
    lengths: Annotated[str, typer.Option("--lengths", help="Document lengths, comma separated (k = 1024, m = 1024²).")] = "32k,128k",
    modes: Annotated[str, typer.Option("--modes", help="Comma list of dense, star, ring, auto (what --attention auto picks per length), hf-dense, hf-static.")] = "dense,star,ring",
    block_sizes: Annotated[Optional[str], typer.Option("--block-sizes", help="Star block sizes, comma list (default: N/4).")] = None,
    anchor_size: Annotated[Optional[str], typer.Option("--anchor-size", help="Star anchor tokens (default: the block size).")] = None,
    decodes: Annotated[str, typer.Option("--decodes", help="Engine decode modes, comma list: auto (a CUDA graph on cuda), eager (the reference), static.")] = "auto",
    relays: Annotated[Optional[str], typer.Option("--relays", help="Star relays, comma list: tokens of the previous block each block also attends to (default: the engine's, the whole block with N/4 blocks, else 0).")] = None,
    ranks: Annotated[int, typer.Option("--ranks", help="Processes (one per GPU); >1 starts them as torch.distributed.run ranks.")] = 1,
    device: Annotated[str, typer.Option("--device", help="auto, cuda or cpu.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto (bfloat16 on cuda and on cpus with native bf16, else float32), bfloat16, float16, float32.")] = "auto",
    kernel: Annotated[str, typer.Option("--kernel", help=f"Attention kernel: {KERNEL_NAMES}.")] = "auto",
    question_tokens: Annotated[int, typer.Option("--question-tokens", help="Question length in tokens.")] = 32,
    decode_tokens: Annotated[int, typer.Option("--decode-tokens", help="Decode steps timed.")] = 32,
    decode_warmup: Annotated[int, typer.Option("--decode-warmup", help="Decode steps run before timing.")] = 64,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed runs per cell (median reported).")] = 1,
    pass_tokens: Annotated[int, typer.Option("--pass-tokens", help="Most document tokens per forward pass where the whole document does not fit in the GPU's free memory (on the CPU: always).")] = DEFAULT_PASS_TOKENS,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write every cell and the run's metadata here.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for weights and token ids.")] = 0,
    matmul_size: Annotated[Optional[int], typer.Option("--matmul-size", help="Side of the square matmul measuring the ceiling (default 8192 on cuda, 2048 on cpu).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
):
    """Speed benchmark of the engine on random-weight model shapes: phase 1, time to first token, decode, memory, FLOP/s."""
    _run_tool("bench.command", "benchmark", dict(locals()))


def evaluate(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model directory, .gguf file or hub id (default: the embedded model).")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="Comma list of tasks or families, or all. With --data, filters its samples.")] = None,
    lengths: Annotated[Optional[str], typer.Option(help="Comma list of prompt lengths in tokens, e.g. 2k,8k (default 4k). With --data, filters its samples.")] = None,
    samples: Annotated[int, typer.Option(help="Generated samples per task and length.")] = 4,
    attention: Annotated[str, typer.Option(help="Comma list of attention modes to compare: dense, star, ring.")] = "dense,star",
    block_sizes: Annotated[Optional[str], typer.Option("--block-sizes", help="Comma list of star block sizes, e.g. 512,2k; auto is about N/4 (the default).")] = None,
    anchor_size: Annotated[Optional[int], typer.Option(help="Star anchor size (default: the block size).")] = None,
    relays: Annotated[Optional[str], typer.Option("--relays", help="Comma list of star relays: tokens at the end of the previous block each block attends to through their cached KV (default: the engine's).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Read samples from this JSONL file instead of generating them.")] = None,
    suite: Annotated[Optional[str], typer.Option(help="code: factual questions about pinned real source files, instead of the synthetic tasks.")] = None,
    decoding: Annotated[str, typer.Option(help="Comma list of decodings to compare: greedy, defaults (the model's own sampling).")] = "greedy",
    seed: Annotated[int, typer.Option(help="Seed of the generated samples, and of sampled decoding (sample i draws with seed + i).")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    kernel: Annotated[str, typer.Option(help="Attention kernel (auto picks the fastest available).")] = "auto",
    rope_scaling: Annotated[Optional[str], typer.Option("--rope-scaling", help="Stretch the model's RoPE for lengths past its window, TYPE:FACTOR (e.g. yarn:4).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Also write the JSON results to this file.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
):
    """Accuracy suite: synthetic long-context tasks (or --suite code) under each attention mode and decoding."""
    _run_tool("evals.command", "evaluate", dict(locals()))
