"""``starcli eval`` as a whole: read the options, build or read the samples, run them on one
session, and report (the table on stdout, or one JSON object; progress on stderr)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from ...errors import InputError, UsageError
from .data import read_jsonl
from .options import DEFAULT_LENGTHS, decodings_for, parse_configs, parse_decodings, parse_lengths, parse_tasks
from .tasks import generate_suite


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _progress_printer(total: int):
    from .runner import format_length

    done = 0

    def on_sample(record: dict) -> None:
        nonlocal done
        done += 1
        _say(f"[{done}/{total}] {record['task']} {format_length(record['length'])} {record['config']}: "
             f"score {record['score']:.2f} in {record['seconds']:.1f}s")

    return on_sample


def _stage_printer():
    last = {"stage": None}

    def progress(stage: str, done: int, total: int) -> None:
        # model preparation reports often; one line per stage is enough on a log
        if stage != last["stage"]:
            last["stage"] = stage
            _say(f"{stage}...")

    return progress


def evaluate(model: str | None = None, tasks: str | None = None, lengths: str | None = None, samples: int = 4,
             attention: str = "dense,star", block_sizes: str | None = None, anchor_size: int | None = None,
             relays: str | None = None, data: Path | None = None, seed: int = 0, device: str = "auto",
             dtype: str = "auto", kernel: str = "auto", rope_scaling: str | None = None, json_output: bool = False,
             out: Path | None = None, suite: str | None = None, decoding: str = "greedy") -> dict:
    import torch

    from ...app.checks import resolve_device
    from ...model.dtypes import pick_dtype
    from ...model.resolve import resolve_model
    from ...model.rope import parse_rope_scaling
    from ...run.session import Session
    from ...run.settings import RunSettings
    from ...star.comm import Comm
    from ...star.kernels import resolve_kernel
    from .runner import format_table, make_configs, run_eval

    from ..paths import check_output_file

    if out is not None:
        check_output_file(out, "--out")
    task_names = parse_tasks(tasks or "all", strict=data is None)
    length_list = parse_lengths(lengths or DEFAULT_LENGTHS)
    if samples < 1:
        raise UsageError(f"--samples must be at least 1, got {samples}")
    configs = make_configs(parse_configs(attention, block_sizes, anchor_size, relays))
    device = resolve_device(device)
    kernel_name = resolve_kernel(kernel, device)
    if rope_scaling:
        parse_rope_scaling(rope_scaling)
    torch_dtype = pick_dtype(device, dtype)

    decoding_names = parse_decodings(decoding)
    if suite is not None and suite != "code":
        raise UsageError(f"--suite must be code, got {suite!r}")
    if suite is not None and data is not None:
        raise UsageError("use --suite or --data, not both")
    samples_given = None
    if suite == "code":
        from .code_questions import code_suite

        samples_given = code_suite()
    suite = samples_given
    if data is not None:
        suite = read_jsonl(data)
        if tasks is not None:
            suite = [s for s in suite if s.task in task_names]
        if lengths is not None:
            suite = [s for s in suite if s.length in length_list]
        if not suite:
            raise UsageError(f"{data}: no samples match --tasks/--lengths")

    spec = resolve_model(model, progress=_stage_printer())
    _say(f"loading {spec.name}...")
    settings = RunSettings(dtype=str(torch_dtype).removeprefix("torch."), kernel=kernel_name, rope_scaling=rope_scaling)
    session = Session.load(settings, str(spec.path), Comm(device=torch.device(device)))

    if suite is None:
        _say(f"generating {len(task_names)} tasks x {len(length_list)} lengths x {samples} samples...")
        suite = generate_suite(task_names, length_list, samples, seed, session.tokenizer)

    decodings = decodings_for(decoding_names, spec.path, seed)
    results = run_eval(session, suite, configs, on_sample=_progress_printer(len(suite) * len(configs) * len(decodings)),
                       decodings=decodings)
    report = {
        "model": spec.name,
        "device": device,
        "dtype": session.dtype_name,
        "kernel": kernel_name,
        "rope_scaling": rope_scaling,
        "seed": seed if data is None else None,
        "decodings": {name: dataclasses.asdict(params) for name, params in decodings.items()},
        "data": str(data) if data is not None else None,
        **results,
    }
    if out is not None:
        try:
            out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    if json_output:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        print(format_table(results))
    return report
