"""The thread count of CPU decode steps, chosen by timing the steps themselves.

A decode step is a few hundred small operations (matrix-vector products, one query's attention).
Each one that runs on several threads ends in a barrier, so one of its threads losing its core to
another process stalls the whole step: on the 2-core development machine, shared with other jobs,
a 4K-token decode step of the default model took 0.66-2.6 s on 2 threads and 0.23-0.50 s on 1
(bfloat16, interleaved runs). On an idle machine the second thread adds memory bandwidth instead.
Neither count wins everywhere, so the decode loop tries both for a few steps, keeps the faster,
and tries again now and then as the load changes. Phase 1 keeps every thread: its operations are
long enough that a stall costs little.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

import torch

# steps each thread count runs per trial; the first one after a switch is not timed (the threads
# that were parked wake up in it)
_TRIAL_STEPS = 3
_STEPS_BETWEEN_TRIALS = 64


class ThreadChooser:
    """The thread count of the next decode step, given how long the previous step took."""

    def __init__(self, most: int, trial_steps: int = _TRIAL_STEPS, between_trials: int = _STEPS_BETWEEN_TRIALS):
        self.candidates = (most, 1)
        self.trial_steps = trial_steps
        self.between_trials = between_trials
        self.best = most
        self._queue: list[tuple[int, bool]] = []  # (threads, timed) of the coming steps
        self._timed: dict[int, list[float]] = {}  # seconds of the timed steps of the current trial
        self._running: tuple[int, bool] | None = None

    def next(self, last_step_seconds: float | None) -> int:
        if self._running and self._running[1] and last_step_seconds is not None:
            self._timed.setdefault(self._running[0], []).append(last_step_seconds)
        if not self._queue:
            if self._timed:  # a trial just ended: its fastest step decides
                self.best = min(self._timed, key=lambda threads: min(self._timed[threads]))
                self._timed = {}
                self._queue = [(self.best, False)] * self.between_trials
            else:
                self._queue = [(threads, i > 0) for threads in self.candidates for i in range(self.trial_steps)]
        self._running = self._queue.pop(0)
        return self._running[0]


@contextlib.contextmanager
def tuned_decode_threads(device: torch.device, on_token: Callable[[int], bool] | None) -> Iterator[Callable[[int], bool] | None]:
    """``on_token`` wrapped so that each decode step runs with the thread count a ``ThreadChooser``
    picks (CPU with more than one thread only); the thread count is restored on exit.

    A step is timed from the end of one token callback to the start of the next: the model call
    and the choice of the token, not the caller's own work on the token."""
    most = torch.get_num_threads()
    if torch.device(device).type != "cpu" or most == 1:
        yield on_token
        return
    chooser = ThreadChooser(most)
    last_end: float | None = None

    def timed(token: int) -> bool:
        nonlocal last_end
        step = None if last_end is None else time.perf_counter() - last_end
        threads = chooser.next(step)
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        stop = bool(on_token(token)) if on_token else False
        last_end = time.perf_counter()
        return stop

    try:
        yield timed
    finally:
        torch.set_num_threads(most)
