"""Run a job, or a batch of them, in this process or on torchrun ranks.

In this process the session (the loaded model) stays for the next call, so the steps of a long
input load the model once; on ranks every call is one torchrun launch. Either way the events go
to ``emit`` as they come, and the call returns rank 0's results.
"""

from __future__ import annotations

from .. import events
from .launch import LaunchOptions, run_distributed
from .settings import Batch, Job, RunSettings


class Executor:
    def __init__(self, settings: RunSettings, model_path: str, ranks: LaunchOptions | None = None, tokenizer=None):
        self.settings = settings
        self.model_path = model_path
        self.ranks = ranks  # None: this process alone
        self.tokenizer = tokenizer  # already loaded by the caller: the session reuses it
        self.session = None

    def __call__(self, work: Job | Batch, emit) -> list[dict]:
        from ..star.partition import plan_partition

        world = self.ranks.nprocs * self.ranks.nnodes if self.ranks is not None else 1
        s = self.settings
        for job in work.jobs if isinstance(work, Batch) else [work]:
            # block settings no plan accepts fail here, as a usage error, before any rank starts
            plan_partition(s.attention, len(job.document_ids), world, s.block_size, s.anchor_size, relay=s.relay)
        results: list[dict] = []

        def collect(event: events.Event) -> None:
            if isinstance(event, events.Result):
                results.append(event.result)
            emit(event)

        if self.ranks is not None:
            run_distributed(work, self.ranks, collect)
            return results
        from .rank import run_batch, run_job

        session = self.local_session(emit)
        (run_batch if isinstance(work, Batch) else run_job)(work, session.comm, collect, session)
        return results

    def local_session(self, emit: events.Emit):
        """The session of this process (loaded at the first call, then kept): the one in-process
        path, for jobs and for chat's turns."""
        if self.ranks is not None:
            raise RuntimeError("a session in this process was asked of an executor that runs on ranks")
        if self.session is None:
            import torch

            from ..star.comm import Comm
            from .session import Session

            comm = Comm(device=torch.device("cuda", 0) if self.settings.device == "cuda" else torch.device("cpu"))
            emit(events.Stage(events.LOADING_MODEL, 0))
            self.session = Session.load(self.settings, self.model_path, comm, tokenizer=self.tokenizer)
        return self.session
