"""Run a job on several ranks: the CLI starts torchrun, ranks stream events back over loopback.

The CLI has already read and tokenised the input; the job (token ids + settings) goes to the ranks
as a private JSON file, so no rank re-reads files or stdin. Every rank connects to the CLI's event
socket: rank 0 sends progress, tokens and the result; any rank that fails sends its error. The CLI
renders those events exactly as in one process. torchrun runs in its own process group, which the
CLI ends as a whole on failure, Ctrl-C or exit, so no rank outlives the command.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import events
from ..errors import RunError
from .settings import Batch, Job

# How long the CLI waits for ranks to finish after one of them reported an error.
_SHUTDOWN_GRACE_S = 10.0
# Beyond --timeout, how long the ranks of a multi-node run may take to start (the rendezvous of
# every node, then imports) before the run gives up on a node that never came.
_RANK_START_S = 30.0


class LaunchError(RunError):
    pass


@dataclass
class LaunchOptions:
    nprocs: int
    device: str  # "cpu" (gloo) or "cuda" (nccl)
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None  # host:port; required when nnodes > 1
    timeout_s: float = 120.0  # collective timeout inside the ranks


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def rank_environment(nprocs: int) -> dict[str, str]:
    """The ranks' environment: this one, unbuffered, the CPU's threads shared among the ranks, and
    this starcli first on the import path (the ranks run the code that launched them)."""
    threads = os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nprocs)))
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": threads, "PYTHONPATH": path}


def torchrun_command(nprocs: int, module_argv: list[str], nnodes: int = 1, node_rank: int = 0,
                     rdzv_endpoint: str | None = None) -> list[str]:
    """``python -m torch.distributed.run ... -m MODULE ARGS``: ``nprocs`` ranks on this node."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nprocs), "--max-restarts", "0"]
    if nnodes > 1:
        if not rdzv_endpoint or ":" not in rdzv_endpoint:
            raise LaunchError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (node 0's address, the same on every node)")
        host, port = rdzv_endpoint.rsplit(":", 1)
        # static rendezvous: node 0 hosts it, and node r's ranks come after node r-1's, so global
        # rank 0 (which streams the answer) is always on node 0
        cmd += ["--nnodes", str(nnodes), "--node-rank", str(node_rank), "--master-addr", host, "--master-port", port]
    else:
        # one node: rendezvous only on loopback, on a port nobody else chose
        cmd += ["--nnodes", "1", "--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    return cmd + module_argv


def start_torchrun(cmd: list[str], env: dict[str, str], *, die_with_parent: bool = False, **popen) -> subprocess.Popen:
    """torchrun in a process group of its own, which ``end_process_group`` ends as a whole; with
    ``die_with_parent``, also sent SIGTERM (Linux) if the thread that started it dies, even by
    SIGKILL, so that its ranks never outlive a command killed outright."""
    return subprocess.Popen(cmd, env=env, start_new_session=True,
                            preexec_fn=terminate_with_parent if die_with_parent else None, **popen)


def terminate_with_parent() -> None:
    """Ask the kernel (Linux) to send this process SIGTERM when the thread that started it ends."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the command's own handlers still end the group


def _worker_command(options: LaunchOptions, events: str) -> list[str]:
    return torchrun_command(
        options.nprocs,
        ["-m", "starcli.run.worker", "--device", options.device, "--timeout", str(options.timeout_s), "--events", events],
        options.nnodes, options.node_rank, options.rdzv_endpoint,
    )


class _EventServer:
    """Accepts one connection per rank, sends it the job, and forwards its JSON-line events to ``emit``."""

    def __init__(self, emit: events.Emit, job_line: bytes = b""):
        self.emit = emit
        self.job_line = job_line
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.5)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.errors: list[events.RankError] = []
        self.failure: BaseException | None = None  # e.g. a closed stdout pipe while rendering
        self.closed = False
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            thread = threading.Thread(target=self._read, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _read(self, conn: socket.socket) -> None:
        try:
            conn.sendall(self.job_line)
        except OSError:
            conn.close()
            return
        with conn, conn.makefile("r", encoding="utf-8") as lines:
            for line in lines:
                try:
                    event = events.from_json(json.loads(line))
                except ValueError:  # not JSON, or not an event
                    continue
                with self.lock:
                    if isinstance(event, events.RankError):
                        self.errors.append(event)
                        continue
                    if self.failure is not None:
                        continue
                    try:
                        self.emit(event)
                    except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                        self.failure = exc

    def close(self) -> None:
        self.closed = True
        for thread in self.threads:
            thread.join(timeout=2)
        self.sock.close()


def end_process_group(proc: subprocess.Popen) -> None:
    """Stop torchrun and its ranks (the process group we created for it)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


_FAILED_RANK = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank[^)]*\)\s*exitcode\s*:\s*(-?\d+)")


def _describe_failure(server: _EventServer, torchrun_log: str, returncode: int) -> str:
    """Name the rank that failed first and why.

    A rank killed by a signal (out of memory, killed by hand) cannot report; the others then fail
    with connection errors that they do report. So a rank that died by a signal without reporting
    is the cause; otherwise the first reported error is.
    """
    reported = {e.rank for e in server.errors}
    deaths = [(int(rank), int(code)) for rank, code in _FAILED_RANK.findall(torchrun_log)]
    # torchrun ends the surviving ranks with SIGTERM once one dies: a SIGTERM is the cause only
    # when no rank died by another signal
    deaths.sort(key=lambda death: death[1] == -signal.SIGTERM)
    for rank, code in deaths:
        if code < 0 and rank not in reported:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            hint = " (out of memory, or killed)" if -code == signal.SIGKILL else ""
            return f"rank {rank} was killed by {name}{hint}"
    if server.errors:
        first = server.errors[0]
        return f"rank {first.rank} failed: {first.message}"
    for rank, code in _FAILED_RANK.findall(torchrun_log):
        return f"rank {rank} failed with exit code {code}"
    return f"the ranks exited with status {returncode}"


def run_distributed(job: Job | Batch, options: LaunchOptions, emit: events.Emit) -> None:
    """Run ``job`` (or each job of a batch, on one model load) on ``options.nprocs`` local ranks
    (× nnodes); raise LaunchError naming a failed rank."""
    server = _EventServer(emit, (json.dumps(job.to_json()) + "\n").encode())
    # torchrun's own files (its per-rank error files) go to a private folder removed at the end
    scratch = tempfile.mkdtemp(prefix="starcli-ranks-")
    # its output, unlinked at once: nothing of the run stays on disk, whatever ends it
    log = tempfile.TemporaryFile("w+", errors="replace")
    proc = None
    try:
        proc = start_torchrun(_worker_command(options, server.address),
                              {**rank_environment(options.nprocs), "TMPDIR": scratch}, die_with_parent=True,
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        error_seen_at = None
        started = time.monotonic()
        while proc.poll() is None:
            if server.failure is not None:
                raise server.failure
            if (options.nnodes > 1 and not server.threads
                    and time.monotonic() - started > options.timeout_s + _RANK_START_S):
                raise LaunchError(f"no rank started within {options.timeout_s + _RANK_START_S:.0f} s: not every node "
                                  f"joined the rendezvous at {options.rdzv_endpoint} (run the same command on each)")
            if server.errors and error_seen_at is None:
                error_seen_at = time.monotonic()
            if error_seen_at is not None and time.monotonic() - error_seen_at > _SHUTDOWN_GRACE_S:
                break
            time.sleep(0.05)
        end_process_group(proc)
        server.close()
        if server.failure is not None:
            raise server.failure
        if proc.returncode != 0 or server.errors:
            log.seek(0)
            raise LaunchError(_describe_failure(server, log.read(), proc.returncode))
    finally:
        if proc is not None:
            end_process_group(proc)
        server.close()
        log.close()
        shutil.rmtree(scratch, ignore_errors=True)
