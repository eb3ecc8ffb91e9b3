"""A whole bench run from its options: in this process, or relaunched on torchrun ranks.

With ``--ranks N`` the command starts N copies of itself (``python -m starcli bench ...``) through
the same torchrun launcher ``ask --procs/--gpus`` uses; every rank runs the same cells in the same
order and rank 0 prints the table and writes the JSON.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

from ...errors import RunError
from .cells import COMMAND_ENV, BenchError, bench_argv, bench_settings, command_line, plan_cells
from .table import format_table

# Set by the launching process so every rank records the command the user actually typed.
# Seconds a multi-rank run may take before all its ranks are ended (None: no limit; tests bound it).
RELAUNCH_TIMEOUT_S: Optional[float] = None


def benchmark(**options) -> Optional[dict]:
    """Run the bench of ``options`` (``bench_settings``' keywords, as typed); the report on rank 0
    of the run, None in a launching process and on the other ranks."""
    import torch

    from ...star.comm import init_comm
    from .runner import run_bench

    settings = bench_settings(**options)
    ranks = options.get("ranks", 1)
    inside_launcher = "WORLD_SIZE" in os.environ
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if inside_launcher and ranks > 1 and ranks != world:
        raise BenchError(f"--ranks {ranks} but the launcher started {world} processes")
    if ranks > 1 and not inside_launcher:
        if settings.device == "cuda" and torch.cuda.device_count() < ranks:
            raise BenchError(f"--ranks {ranks} needs {ranks} GPUs, {torch.cuda.device_count()} visible")
        plan_cells(settings, ranks)
        _relaunch(ranks, bench_argv(settings, ranks))
        return None
    plan_cells(settings, world)
    comm = init_comm(settings.device)
    try:
        log = (lambda line: print(f"[bench] {line}", file=sys.stderr)) if comm.rank == 0 else (lambda line: None)
        report = run_bench(settings, comm, log)
    finally:
        comm.close()
    if report is None:
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


def _relaunch(ranks: int, argv: list[str]) -> None:
    """Run ``starcli bench`` on ``ranks`` local processes; an interrupt or failure ends them all."""
    import subprocess

    from ...run.launch import end_process_group, rank_environment, start_torchrun, torchrun_command

    env = {**rank_environment(ranks), COMMAND_ENV: command_line()}
    proc = start_torchrun(torchrun_command(ranks, ["-m", "starcli", "bench", *argv]), env)
    try:
        code = proc.wait(timeout=RELAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RunError(f"the {ranks} bench ranks did not finish within {RELAUNCH_TIMEOUT_S:g} s") from None
    finally:
        end_process_group(proc)
    if code:
        raise RunError(f"a bench rank failed (exit status {code}); its error is above")
