"""``starcli eval``: parse options, build or read samples, run them, print the table.

Results go to stdout (the table, or one JSON object with ``--json``); progress to stderr. Bad
option values exit with 2, unusable data, models or runs with 1, each with one line on stderr.
"""

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .data import EvalDataError, read_jsonl
from .tasks import FAMILIES, TASKS, TaskError, generate_suite

DEFAULT_LENGTHS = "4k"
_LENGTH = re.compile(r"^(\d+)([km]?)$")


class OptionError(ValueError):
    """A bad option value (exit status 2)."""


def _items(text: str, option: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise OptionError(f"{option} is empty")
    return list(dict.fromkeys(items))


def parse_tasks(text: str, strict: bool = True) -> list[str]:
    """``all``, task names, or family names (every task of the family), comma-separated.

    ``strict=False`` keeps unknown names as they are: a data file may carry tasks of its own.
    """
    tasks: list[str] = []
    for item in _items(text, "--tasks"):
        if item == "all":
            tasks += list(TASKS)
        elif item in TASKS:
            tasks.append(item)
        elif item in FAMILIES:
            tasks += [name for name, (family, _) in TASKS.items() if family == item]
        elif not strict:
            tasks.append(item)
        else:
            raise OptionError(f"--tasks: unknown task {item!r}; choose all, {', '.join(FAMILIES)} or {', '.join(TASKS)}")
    return list(dict.fromkeys(tasks))


def parse_length(text: str, option: str = "--lengths") -> int:
    """``4096``, ``4k`` (4096) or ``1m`` (1048576): binary multiples, as context windows are sized."""
    match = _LENGTH.match(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise OptionError(f"{option}: cannot read {text!r}; use token counts like 2k,8k or 4096")
    return int(match.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2)]


def parse_count(text: str, option: str) -> int:
    """A token count that may be 0 (``0``, ``256``)."""
    return 0 if text.strip() == "0" else parse_length(text, option)


def parse_lengths(text: str) -> list[int]:
    return sorted({parse_length(item) for item in _items(text, "--lengths")})


def parse_configs(attention: str, block_sizes: str | None, anchor_size: int | None, relays: str | None = None) -> list[tuple]:
    """One config per dense/ring mode and one per star (block size × relay); block ``auto`` is the
    N/4 rule."""
    from ...star.partition import DEFAULT_RELAY

    relay_list = [DEFAULT_RELAY] if relays is None else [parse_count(item, "--relays") for item in _items(relays, "--relays")]
    blocks: list[int | None] = [None]
    if block_sizes is not None:
        blocks = []
        for item in _items(block_sizes, "--block-sizes"):
            blocks.append(None if item == "auto" else parse_length(item, "--block-sizes"))
    if anchor_size is not None and anchor_size <= 0:
        raise OptionError(f"--anchor-size must be a positive number of tokens, got {anchor_size}")
    for block in blocks:
        if block is not None and anchor_size is not None and anchor_size > block:
            raise OptionError(f"--anchor-size ({anchor_size}) must not exceed a block size ({block})")
    configs: list[tuple] = []
    for mode in _items(attention, "--attention"):
        if mode == "star":
            configs += [("star", block, anchor_size, relay) for block in blocks for relay in relay_list]
        elif mode in ("dense", "ring"):
            configs.append((mode, None, None))
        else:
            raise OptionError(f"--attention: unknown mode {mode!r}; choose dense, star or ring")
    return configs


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=code)


def _progress_printer(total: int):
    from .runner import format_length

    done = 0

    def on_sample(record: dict) -> None:
        nonlocal done
        done += 1
        typer.echo(
            f"[{done}/{total}] {record['task']} {format_length(record['length'])} {record['config']}: "
            f"score {record['score']:.2f} in {record['seconds']:.1f}s",
            err=True,
        )

    return on_sample


def _stage_printer():
    last = {"stage": None}

    def progress(stage: str, done: int, total: int) -> None:
        # model preparation reports often; one line per stage is enough on a log
        if stage != last["stage"]:
            last["stage"] = stage
            typer.echo(f"{stage}...", err=True)

    return progress


def eval_command(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model directory, .gguf file or hub id (default: the embedded model).")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="Comma list of tasks or families, or all. With --data, filters its samples.")] = None,
    lengths: Annotated[Optional[str], typer.Option(help=f"Comma list of prompt lengths in tokens, e.g. 2k,8k (default {DEFAULT_LENGTHS}). With --data, filters its samples.")] = None,
    samples: Annotated[int, typer.Option(help="Generated samples per task and length.")] = 4,
    attention: Annotated[str, typer.Option(help="Comma list of attention modes to compare: dense, star, ring.")] = "dense,star",
    block_sizes: Annotated[Optional[str], typer.Option("--block-sizes", help="Comma list of star block sizes, e.g. 512,2k; auto is about N/4 (the default).")] = None,
    anchor_size: Annotated[Optional[int], typer.Option(help="Star anchor size (default: the block size).")] = None,
    relays: Annotated[Optional[str], typer.Option("--relays", help="Comma list of star relays: tokens at the end of the previous block each block attends to through their cached KV (default: the engine's).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Read samples from this JSONL file instead of generating them.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated samples.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    kernel: Annotated[str, typer.Option(help="Attention kernel (auto picks the fastest available).")] = "auto",
    rope_scaling: Annotated[Optional[str], typer.Option("--rope-scaling", help="Stretch the model's RoPE for lengths past its window, TYPE:FACTOR (e.g. yarn:4).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Also write the JSON results to this file.")] = None,
) -> None:
    """Measure accuracy on synthetic long-context tasks, dense against star attention."""
    from ...run.session import resolve_device
    from ...star.kernels import KernelError, resolve_kernel
    from ...model.rope import parse_rope_scaling
    from .runner import format_table, make_configs, run_eval

    try:
        task_names = parse_tasks(tasks or "all", strict=data is None)
        length_list = parse_lengths(lengths or DEFAULT_LENGTHS)
        if samples < 1:
            raise OptionError(f"--samples must be at least 1, got {samples}")
        configs = make_configs(parse_configs(attention, block_sizes, anchor_size, relays))
        device = resolve_device(device)
        kernel_name = resolve_kernel(kernel, device)
        if rope_scaling:
            parse_rope_scaling(rope_scaling)
    except (ValueError, KernelError) as exc:
        raise _fail(str(exc), 2) from None

    suite = None
    if data is not None:
        try:
            suite = read_jsonl(data)
        except EvalDataError as exc:
            raise _fail(str(exc), 1) from None
        if tasks is not None:
            suite = [s for s in suite if s.task in task_names]
        if lengths is not None:
            suite = [s for s in suite if s.length in length_list]
        if not suite:
            raise _fail(f"{data}: no samples match --tasks/--lengths", 2)

    from ...model.resolve import ModelError, load_model, pick_dtype, resolve_model
    from ...star import attention as star_attention

    star_attention.register()
    try:
        spec = resolve_model(model, progress=_stage_printer())
        typer.echo(f"loading {spec.name}...", err=True)
        torch_dtype = pick_dtype(device, dtype)
        loaded, tokenizer = load_model(spec, device=device, dtype=torch_dtype, attn_implementation=star_attention.ATTENTION_NAME,
                                       rope_scaling=rope_scaling)
    except ModelError as exc:
        raise _fail(str(exc), 1) from None

    if suite is None:
        typer.echo(f"generating {len(task_names)} tasks x {len(length_list)} lengths x {samples} samples...", err=True)
        try:
            suite = generate_suite(task_names, length_list, samples, seed, tokenizer)
        except TaskError as exc:
            raise _fail(str(exc), 2) from None

    try:
        results = run_eval(loaded, tokenizer, suite, configs, kernel=kernel_name, on_sample=_progress_printer(len(suite) * len(configs)))
    except ValueError as exc:  # a partition that cannot be planned for some sample, e.g. anchor > N/4
        raise _fail(str(exc), 2) from None
    except RuntimeError as exc:
        raise _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 1) from None

    report = {
        "model": spec.name,
        "device": device,
        "dtype": str(torch_dtype).replace("torch.", ""),
        "kernel": kernel_name,
        "rope_scaling": rope_scaling,
        "seed": seed if data is None else None,
        "data": str(data) if data is not None else None,
        **results,
    }
    if out is not None:
        try:
            out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise _fail(f"cannot write {out}: {exc.strerror or exc}", 1) from None
    if json_output:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        typer.echo(format_table(results))
