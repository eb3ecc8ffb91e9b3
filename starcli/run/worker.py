"""One rank of a multi-process run: ``python -m starcli.run.worker --job JOB.json``, or, for a server,
``--serve ADDRESS``: the rank loads the model once and runs the jobs ``run.pool.RankPool`` sends.

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
import threading
import traceback
from typing import Any, Callable

from .. import events
from ..errors import Cancelled, one_line
from ..star.comm import init_comm
from .launch import terminate_with_parent
from .rank import run_batch, run_job
from .settings import Batch, job_from_json


class _EventSink:
    def __init__(self, address: str):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.sock.settimeout(None)
        self.file = self.sock.makefile("w", encoding="utf-8")

    def read_line(self) -> str:
        with self.sock.makefile("r", encoding="utf-8") as lines:
            return lines.readline()

    def __call__(self, event: events.Event | dict) -> None:
        message = event if isinstance(event, dict) else events.to_json(event)
        self.file.write(json.dumps(message) + "\n")
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
    work = parser.add_mutually_exclusive_group()
    work.add_argument("--job", help="the job's JSON file (else it comes over the --events connection)")
    work.add_argument("--serve", help="HOST:PORT of the server whose jobs this rank runs")
    parser.add_argument("--memory-bytes", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--events", default=None)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    # a rank ends with its launcher: if torchrun itself is killed outright, its ranks run in
    # sessions of their own and would otherwise go on holding memory with nobody to report to
    terminate_with_parent()
    if not (args.job or args.serve or args.events):
        parser.error("one of --job, --serve or --events is required")
    rank = int(os.environ.get("RANK", "0"))
    if args.serve:
        return serve_jobs(args.serve, args.device, args.timeout, args.memory_bytes, rank)
    if args.job:
        try:
            with open(args.job) as f:
                job = job_from_json(json.load(f))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            print(f"starcli: error: cannot read the job file {args.job}: {one_line(exc)}", file=sys.stderr)
            return 1
    sink = _EventSink(args.events) if args.events else None
    try:
        if not args.job:
            # the launcher sends the job over the events connection: no copy of the document's
            # token ids is ever written to a shared temporary folder
            job = job_from_json(json.loads(sink.read_line()))
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
        return _failed(rank, exc, sink)


class _JobChannel:
    """This rank's connection to the server: jobs in, events out; a reader thread notes a cancel
    for the job in flight as it arrives."""

    def __init__(self, address: str, rank: int):
        import queue

        self.sink = _EventSink(address)
        self.sink({"type": "hello", "rank": rank})
        self.ops: queue.Queue = queue.Queue()
        self.cancelled_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with self.sink.sock.makefile("r", encoding="utf-8") as lines:
            for line in lines:
                op = json.loads(line)
                if op.get("op") == "cancel":
                    self.cancelled_id = op["id"]
                else:
                    self.ops.put(op)
        self.ops.put({"op": "exit"})  # the server went away


def serve_jobs(address: str, device: str, timeout_s: float, memory_bytes: int, rank: int) -> int:
    """Run the server's jobs one after another on one loaded model until it says exit."""
    from .memory import DocumentMemory
    from .session import Session
    from .settings import RunSettings

    channel = _JobChannel(address, rank)
    try:
        comm = init_comm(device, timeout_s=timeout_s)
        memory = DocumentMemory(memory_bytes)
        session = None
        while True:
            op = channel.ops.get()
            if op["op"] == "exit":
                break
            emit = channel.sink if comm.rank == 0 else events.discard
            try:
                if op["op"] == "load":
                    emit(events.Stage(events.LOADING_MODEL, 0))
                    session = Session.load(RunSettings(**op["settings"]), op["model_path"], comm)
                    emit(events.Stage(events.LOADING_MODEL, 1))
                elif op["op"] == "call":
                    result = _function(op["function"])(comm, emit, **op["kwargs"])
                    if comm.rank == 0 and result is not None:
                        emit(events.Result(result))
                else:
                    work = job_from_json(op["work"])
                    run = run_batch if isinstance(work, Batch) else run_job
                    run(work, comm, emit, session, memory=memory, cancelled=lambda: channel.cancelled_id == op["id"])
                channel.sink({"type": "done"})
            except Cancelled:  # every rank raises it at the same token
                channel.sink({"type": "cancelled"})
        comm.barrier()
        comm.close()
        return 0
    except BaseException as exc:  # the process group is unusable now: report and leave
        return _failed(rank, exc, channel.sink)


def _function(name: str) -> Callable:
    """``starcli.module:function``: only starcli's own functions run on a rank."""
    import importlib

    module, _, function = name.partition(":")
    if not module.startswith("starcli.") or not function:
        raise ValueError(f"not a starcli function: {name!r}")
    return getattr(importlib.import_module(module), function)


def _failed(rank: int, exc: BaseException, sink: _EventSink | None) -> int:
    """Report why this rank failed (to the CLI or server when connected, and on stderr); exit 1."""
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
