"""Phase 2's one-token step with fixed shapes, replayed as a CUDA graph.

Run eagerly, every decoding step launches each kernel of each layer from Python: about 2,000
launches a token for a 24-layer model, which costs more than the GPU's own work on a small model
and a good part of it on a large one. Here the step reads its token, position and tail length
from device tensors and attends over a preallocated tail masked by that length
(``GenerateStep.tail_length``), so its shapes never change: it is captured once and each token
then costs three small writes and one replay. The document KV is fixed for the run, and the
tail's buffers stay where they are while the capture lives (``StarEngine`` drops it whenever
either changes).

Uncaptured, the same fixed-shape step runs eagerly: that is how the CPU tests check its
arithmetic against the growing-tail step.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from .attention import GenerateStep

# Runs before capture: they build cuDNN plans, lazy module state and allocator pools, none of
# which may happen during capture. They write this step's real K/V into its real tail slot, which
# the replay then writes again with the same values.
_WARMUP_RUNS = 2

Forward = Callable[[torch.Tensor, torch.Tensor, GenerateStep], torch.Tensor]


class DecodeStep:
    """``step(token, position, tail_length) -> logits (V,)`` for one new token.

    ``forward(ids (1,), positions (1,), step) -> logits (V,)`` is the engine's model call. With
    ``capture`` (CUDA) the first call captures it; later calls replay. The logits tensor returned is
    overwritten by the next call."""

    def __init__(self, forward: Forward, device: torch.device, capture: bool):
        self.device = device
        self.capture = capture
        self.ids = torch.zeros(1, dtype=torch.long, device=device)
        self.positions = torch.zeros(1, dtype=torch.long, device=device)
        self.tail_length = torch.zeros((), dtype=torch.long, device=device)
        self._forward = forward
        self._step = GenerateStep(tail_length=self.tail_length, positions=self.positions)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._logits: torch.Tensor | None = None
        self.capture_seconds = 0.0  # spent capturing, in the call that did it
        self.capture_failure = ""  # why the step could not be captured; it then runs eagerly

    def __call__(self, token: int, position: int, tail_length: int) -> torch.Tensor:
        self.ids.fill_(token)
        self.positions.fill_(position)
        self.tail_length.fill_(tail_length)
        if self.capture and self._graph is None:
            self._capture_now()
        if not self.capture:
            return self._run()
        self._graph.replay()
        return self._logits

    def _run(self) -> torch.Tensor:
        return self._forward(self.ids, self.positions, self._step)

    def _capture_now(self) -> None:
        start = time.perf_counter()
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(_WARMUP_RUNS):
                self._run()
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._logits = self._run()
        except RuntimeError as error:
            # Some models' layers cannot be captured (transformers' grouped expert matmul of
            # gpt-oss and DeepSeek copies from host memory): the same fixed-shape step then runs
            # eagerly, as exact and slower. torch refuses such an operation before issuing it,
            # so the stream leaves capture intact.
            self.capture, self._logits = False, None
            self.capture_failure = str(error).splitlines()[0] if str(error) else type(error).__name__
        torch.cuda.synchronize(self.device)
        if self.capture:
            self._graph = graph
        self.capture_seconds = time.perf_counter() - start
