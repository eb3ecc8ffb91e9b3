"""A whole bench run from its options: in this process, or on ranks.

With ``--ranks N`` the command starts N ranks in the worker loop a server's ranks run
(``run.pool.RankPool``); every rank runs the same cells in the same order, and rank 0's report
comes back to this process, which prints the table and writes the JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Optional

from ...errors import RunError
from .cells import COMMAND_ENV, BenchError, BenchSettings, bench_settings, command_line, plan_cells
from .table import format_table

# Seconds a multi-rank run may take before all its ranks are ended (None: no limit; tests bound it).
RELAUNCH_TIMEOUT_S: Optional[float] = None


def benchmark(**options) -> Optional[dict]:
    """Run the bench of ``options`` (``bench_settings``' keywords, as typed); returns its report
    (None on a rank other than 0 of a run a cluster's launcher started)."""
    import torch

    from ...star.comm import init_comm

    settings = bench_settings(**options)
    ranks = options.get("ranks", 1)
    # started by a cluster's own launcher (torchrun's variables set): this process is one rank
    inside_launcher = "WORLD_SIZE" in os.environ
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if inside_launcher and ranks > 1 and ranks != world:
        raise BenchError(f"--ranks {ranks} but the launcher started {world} processes")
    if ranks > 1 and not inside_launcher:
        if settings.device == "cuda" and torch.cuda.device_count() < ranks:
            raise BenchError(f"--ranks {ranks} needs {ranks} GPUs, {torch.cuda.device_count()} visible")
        plan_cells(settings, ranks)
        report = _on_ranks(ranks, settings)
    else:
        plan_cells(settings, world)
        comm = init_comm(settings.device)
        try:
            report = run_on_rank(comm, _log_to_stderr, dataclasses.asdict(settings))
        finally:
            comm.close()
        if report is None:  # a rank other than 0
            return None
    print(f"# {report['device']} | torch {report['torch']} | transformers {report['transformers']} | "
          f"{report['model']['shape'] or report['model']['path']} {report['dtype']} | kernel {report['kernel']} | "
          f"matmul peak {report['matmul_peak_tflops']:.2f} TFLOP/s")
    print(format_table(report["cells"]), flush=True)
    if settings.json_path:
        path = Path(settings.json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def run_on_rank(comm, emit, settings: dict, command: str | None = None) -> Optional[dict]:
    """The cells on this rank (the same on every rank); the report on rank 0, None elsewhere."""
    from ... import events
    from .runner import run_bench

    if command is not None:
        os.environ[COMMAND_ENV] = command  # the report records the command as the user typed it
    log = (lambda line: emit(events.Note(line))) if comm.rank == 0 else (lambda line: None)
    return run_bench(BenchSettings(**settings), comm, log)


def _log_to_stderr(event) -> None:
    print(f"[bench] {event.text}", file=sys.stderr)


def _on_ranks(ranks: int, settings: BenchSettings) -> dict:
    """Run the cells on ``ranks`` local ranks; an interrupt or failure ends them all."""
    from ... import events
    from ...run.launch import LaunchOptions
    from ...run.pool import RankPool

    reports = []

    def collect(event) -> None:
        if isinstance(event, events.Result):
            reports.append(event.result)
        elif isinstance(event, events.Note):
            _log_to_stderr(event)

    pool = RankPool(LaunchOptions(ranks, settings.device))
    try:
        pool.call(f"{__name__}:run_on_rank", {"settings": dataclasses.asdict(settings), "command": command_line()},
                  collect, timeout_s=RELAUNCH_TIMEOUT_S)
    finally:
        pool.close()
    if not reports:
        raise RunError("the bench ranks ended without a report")
    return reports[0]
