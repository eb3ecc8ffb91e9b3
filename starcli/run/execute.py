"""Run a job, or a batch of them, in this process or on torchrun ranks.

In this process the session (the loaded model) stays for the next call, so the steps of a long
input load the model once. On ranks a command's every call is one torchrun launch; a resident
executor (``starcli serve``: ``memory_bytes`` set) instead keeps its ranks alive in a worker loop
(``run.pool``) and its encoded documents in memory. Either way the events go to ``emit`` as they
come, and the call returns rank 0's results.
"""

from __future__ import annotations

from typing import Callable

from .. import events
from .launch import LaunchOptions, run_distributed
from .settings import Batch, Job, RunSettings


class Executor:
    def __init__(self, settings: RunSettings, model_path: str, ranks: LaunchOptions | None = None, tokenizer=None,
                 memory_bytes: int | None = None):
        self.settings = settings
        self.model_path = model_path
        self.ranks = ranks  # None: this process alone
        self.tokenizer = tokenizer  # already loaded by the caller: the session reuses it
        self.memory_bytes = memory_bytes  # None: nothing kept between calls but the model
        self.session = None
        self.pool = None
        self.memory = None
        # true once the request being run should stop (a server's client went away); None: never
        self.cancelled: Callable[[], bool] | None = None

    @property
    def world(self) -> int:
        return self.ranks.nprocs * self.ranks.nnodes if self.ranks is not None else 1

    def __call__(self, work: Job | Batch, emit) -> list[dict]:
        from ..star.partition import plan_partition

        for job in work.jobs if isinstance(work, Batch) else [work]:
            # block settings no plan accepts fail here, as a usage error, before any rank starts
            plan_partition(job.settings.attention, len(job.document_ids), self.world, job.settings.block_size,
                           job.settings.anchor_size, relay=job.settings.relay, device_type=job.settings.device)
        results: list[dict] = []

        def collect(event: events.Event) -> None:
            if isinstance(event, events.Result):
                results.append(event.result)
            emit(event)

        if self.ranks is not None and self.memory_bytes is None:
            run_distributed(work, self.ranks, collect)
            return results
        if self.ranks is not None:
            self.rank_pool(emit)(work, collect, self.cancelled)
            return results
        from .rank import run_batch, run_job

        session = self.local_session(emit)
        (run_batch if isinstance(work, Batch) else run_job)(work, session.comm, collect, session, memory=self.memory,
                                                            cancelled=self.cancelled)
        return results

    def local_session(self, emit: events.Emit):
        """The session of this process (loaded at the first call, then kept): the one in-process
        path, for jobs and for chat's turns."""
        if self.ranks is not None:
            raise RuntimeError("a session in this process was asked of an executor that runs on ranks")
        if self.session is None:
            import torch

            from ..star.comm import Comm
            from .memory import DocumentMemory
            from .session import Session

            comm = Comm(device=torch.device("cuda", 0) if self.settings.device == "cuda" else torch.device("cpu"))
            emit(events.Stage(events.LOADING_MODEL, 0))
            self.session = Session.load(self.settings, self.model_path, comm, tokenizer=self.tokenizer)
            if self.memory_bytes is not None:
                self.memory = DocumentMemory(self.memory_bytes)
        return self.session

    def rank_pool(self, emit: events.Emit):
        """The ranks of a resident executor, started and loaded at the first call, then kept."""
        if self.pool is None:
            from .pool import RankPool

            pool = RankPool(self.ranks, self.memory_bytes)
            try:
                pool.load(self.settings, self.model_path, emit)
            except BaseException:
                pool.close()
                raise
            self.pool = pool
        return self.pool

    def load(self, emit: events.Emit) -> None:
        """Load the model now (a server, before it takes requests)."""
        if self.ranks is None:
            self.local_session(emit)
        elif self.memory_bytes is not None:
            self.rank_pool(emit)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
