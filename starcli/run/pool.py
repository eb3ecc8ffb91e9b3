"""Ranks that stay alive between jobs: the worker loop a server (``starcli serve --procs N`` or
``--gpus N``) drives, one job after another, without a torchrun launch or a model load per job.

The server listens on loopback; torchrun starts the ranks (``starcli.run.worker --serve ADDRESS``),
each connects and says hello, and every rank loads the model once. Then each job goes to every rank
as one JSON line; rank 0 streams its events back, and every rank ends the job with ``done`` (or
``cancelled``, all together, or an error). A rank that dies or fails leaves the process group
unusable: the pool fails the job in flight and every later one with a message saying so, and the
server must be restarted.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import socket
import subprocess
import threading
import time
from typing import Callable

from .. import events
from ..errors import Cancelled, RunError
from .launch import LaunchOptions, end_process_group, rank_environment, start_torchrun, torchrun_command
from .settings import Batch, Job, RunSettings

# How long ranks may take to start and connect (imports, the process group) before the pool gives up.
_CONNECT_TIMEOUT_S = 300.0


class RankPool:
    """Ranks started once; ``load`` a model on them, then run jobs (``__call__``) or a function of
    the ranks (``call``: the bench's cells) one after another."""

    def __init__(self, options: LaunchOptions, memory_bytes: int = 0, env: dict[str, str] | None = None):
        self.world = options.nprocs
        self.broken: str | None = None  # why the ranks can no longer run jobs
        self.messages: queue.Queue = queue.Queue()
        self.next_id = 0
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(self.world)
        address = "127.0.0.1:%d" % listener.getsockname()[1]
        argv = ["-m", "starcli.run.worker", "--serve", address, "--device", options.device,
                "--timeout", str(options.timeout_s), "--memory-bytes", str(memory_bytes)]
        self.proc = start_torchrun(torchrun_command(self.world, argv), {**rank_environment(self.world), **(env or {})},
                                   stdin=subprocess.DEVNULL)
        try:
            self.connections = self._accept(listener)
        except BaseException:
            end_process_group(self.proc)
            raise
        finally:
            listener.close()

    def load(self, settings: RunSettings, model_path: str, emit: events.Emit) -> None:
        """Load the model on every rank (once, before the first job)."""
        self.run({"op": "load", "settings": dataclasses.asdict(settings), "model_path": model_path}, emit)

    def call(self, function: str, kwargs: dict, emit: events.Emit, timeout_s: float | None = None) -> None:
        """Run ``function(comm, emit, **kwargs)`` (``"starcli.module:name"``) on every rank; rank 0's
        return value comes back as a ``Result`` event."""
        self.run({"op": "call", "function": function, "kwargs": kwargs}, emit, timeout_s=timeout_s)

    def _accept(self, listener: socket.socket) -> dict[int, socket.socket]:
        connections: dict[int, socket.socket] = {}
        listener.settimeout(0.5)
        deadline = time.monotonic() + _CONNECT_TIMEOUT_S
        while len(connections) < self.world:
            if self.proc.poll() is not None:
                raise RunError(f"the ranks exited with status {self.proc.returncode} before connecting")
            if time.monotonic() > deadline:
                raise RunError(f"{len(connections)} of {self.world} ranks connected within {_CONNECT_TIMEOUT_S:.0f} s")
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            conn.settimeout(None)
            reader = conn.makefile("r", encoding="utf-8")
            hello = json.loads(reader.readline() or "{}")
            rank = int(hello.get("rank", -1))
            connections[rank] = conn
            threading.Thread(target=self._read, args=(rank, reader), daemon=True).start()
        return connections

    def _read(self, rank: int, reader) -> None:
        for line in reader:
            try:
                self.messages.put((rank, json.loads(line)))
            except ValueError:
                continue
        self.messages.put((rank, None))  # the connection closed: the rank is gone

    def _send(self, rank: int, message: dict) -> None:
        self.connections[rank].sendall((json.dumps(message) + "\n").encode())

    def __call__(self, work: Job | Batch, emit: events.Emit, cancelled: Callable[[], bool] | None = None) -> None:
        self.run({"op": "run", "work": work.to_json()}, emit, cancelled)

    def run(self, op: dict, emit: events.Emit, cancelled: Callable[[], bool] | None = None,
            timeout_s: float | None = None) -> None:
        """Send ``op`` to every rank and relay rank 0's events until every rank has ended it."""
        if self.broken:
            raise RunError(self.broken)
        self.next_id += 1
        op = {**op, "id": self.next_id}
        try:
            for rank in self.connections:
                self._send(rank, op)
        except OSError as exc:
            raise self._break(f"a rank stopped taking jobs ({exc})") from None
        ended: dict[int, str] = {}
        cancel_sent = False
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while len(ended) < self.world:
            if deadline is not None and time.monotonic() > deadline:
                raise self._break(f"the ranks did not finish within {timeout_s:g} s")
            if cancelled is not None and not cancel_sent and cancelled():
                cancel_sent = True
                self._send(0, {"op": "cancel", "id": self.next_id})  # rank 0 tells the others
            try:
                rank, message = self.messages.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise self._break(f"the ranks exited (status {self.proc.returncode})") from None
                continue
            if message is None:
                raise self._break(f"rank {rank} died") from None
            kind = message.get("type")
            if kind in ("done", "cancelled"):
                ended[rank] = kind
            elif kind == events.RankError.type:
                raise self._break(f"rank {message.get('rank', rank)} failed: {message.get('message', '')}") from None
            elif rank == 0:
                try:
                    event = events.from_json(message)
                except ValueError:
                    continue
                emit(event)
        if "cancelled" in ended.values():
            raise Cancelled("the request was cancelled")

    def _break(self, why: str) -> RunError:
        self.broken = f"{why}; the server's ranks cannot run more jobs: restart the server"
        end_process_group(self.proc)
        return RunError(self.broken)

    def close(self) -> None:
        """Let the ranks leave their process group together, then end whatever is left."""
        if not self.broken:
            for rank in list(self.connections):
                try:
                    self._send(rank, {"op": "exit"})
                except OSError:
                    pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        end_process_group(self.proc)
        for conn in self.connections.values():
            conn.close()
