"""One rank of a multi-process run: ``python -m starcli.run.worker --job JOB.json``.

Started by the CLI through torchrun, or directly by a cluster launcher that sets torchrun's
variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) itself. With ``--events`` the
rank streams JSON-line events (``starcli.events``) to the CLI; without it, rank 0 hands them to the
renderer ``starcli worker`` gives it (or, run as a module, writes them to stdout as JSON lines).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import traceback
from typing import Any, Callable

from .. import events
from ..star.comm import init_comm
from .rank import run_batch, run_job
from .settings import Batch, job_from_json


class _EventSink:
    def __init__(self, address: str):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.sock.settimeout(None)
        self.file = self.sock.makefile("w", encoding="utf-8")

    def __call__(self, event: events.Event) -> None:
        self.file.write(json.dumps(events.to_json(event)) + "\n")
        self.file.flush()


class _JsonLines:
    """Events as JSON lines on stdout: a rank run by hand without a renderer."""

    def __call__(self, event: events.Event) -> None:
        print(json.dumps(events.to_json(event)), flush=True)

    def finish(self, result) -> None:
        pass


def main(argv: list[str] | None = None, renderer: Callable[[], Any] | None = None) -> int:
    """One rank; ``renderer()`` makes rank 0's event sink (with ``finish(result)``) when no
    ``--events`` address is given."""
    parser = argparse.ArgumentParser(prog="starcli worker")
    parser.add_argument("--job", required=True)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--events", default=None)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    sink = _EventSink(args.events) if args.events else None
    try:
        with open(args.job) as f:
            job = job_from_json(json.load(f))
        comm = init_comm(args.device, timeout_s=args.timeout)
        emit = sink if sink is not None else (renderer or _JsonLines)()
        result = (run_batch if isinstance(job, Batch) else run_job)(job, comm, emit)
        if sink is None and comm.rank == 0:
            emit.finish(result[-1] if isinstance(job, Batch) else result)
        # Leave the process group together: a rank that tears its connections down while a
        # peer's last operation is in flight (rank 0 still receiving the gathered statistics)
        # can make that peer abort.
        comm.barrier()
        comm.close()
        return 0
    except BaseException as exc:  # report the cause to the CLI, then fail this rank
        message = f"{type(exc).__name__}: {exc}".strip().splitlines()[0] if str(exc) else type(exc).__name__
        if sink is not None:
            try:
                sink(events.RankError(rank, message))
            except OSError:
                pass
        print(f"starcli worker rank {rank}: {message}", file=sys.stderr)
        if os.environ.get("STARCLI_DEBUG"):
            traceback.print_exc()
        return 1


def run_and_exit(argv: list[str] | None = None, renderer: Callable[[], Any] | None = None) -> None:
    """Run the rank, then end it without the interpreter's and the C++ libraries' teardown.

    Everything is reported and flushed by then; what is left is destructors, and gloo's threads,
    torn down after the interpreter at exit, could abort a rank that had finished its work
    (SIGABRT, "terminate called without an active exception"), failing a run that had succeeded.
    """
    code = main(argv, renderer)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run_and_exit()
