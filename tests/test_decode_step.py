"""The fixed-shape decoding step (what a CUDA graph replays) against the eager growing-tail step.

Run uncaptured ("static") on the CPU in float32: the tokens must be identical to eager decoding
for every attention mode, across questions that reuse one tail buffer, follow-up turns, a tail
that has to grow, and seeded sampling. The captured variant is checked on the GPU (test_gpu.py).
"""

import pytest
import torch

from starcli.star import engine as engine_module
from starcli.star.engine import EngineError, StarEngine, resolve_decode
from starcli.star.partition import plan_partition
from starcli.star.sampling import SamplingParams

from .tiny import random_ids, tiny_pair


def _conversation(decode: str, attention: str, sampling: SamplingParams) -> list[list[int]]:
    _, star = tiny_pair("qwen2")
    doc = random_ids(300, 1)
    engine = StarEngine(star, kernel="math", decode=decode)
    engine.encode_context(doc, plan_partition(attention, 300, 1, 128 if attention == "star" else None))
    answers = [engine.answer(random_ids(5, 2).tolist(), max_new_tokens=12, sampling=sampling)[0]]
    answers.append(engine.answer(random_ids(3, 3).tolist(), max_new_tokens=12, sampling=sampling)[0])
    answers.append(engine.answer(random_ids(4, 4).tolist(), max_new_tokens=9, sampling=sampling, keep_history=True)[0])
    return answers


@pytest.mark.parametrize("attention", ["star", "dense", "ring"])
@pytest.mark.parametrize("sampling", [SamplingParams(), SamplingParams(temperature=0.8, top_p=0.9, seed=3)])
def test_fixed_shape_step_gives_the_eager_tokens(attention, sampling):
    assert _conversation("static", attention, sampling) == _conversation("eager", attention, sampling)


def test_a_tail_that_outgrows_its_buffer_keeps_the_conversation(monkeypatch):
    # a quantum of 8 tokens: the follow-up turn no longer fits and the tail is copied into a larger one
    monkeypatch.setattr(engine_module, "_TAIL_QUANTUM", 8)
    sampling = SamplingParams()
    assert _conversation("static", "star", sampling) == _conversation("eager", "star", sampling)


def test_decode_modes_are_resolved_and_checked():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_decode("auto", cpu) == "eager" and resolve_decode("auto", cuda) == "graph"
    assert resolve_decode("static", cpu) == "static"
    with pytest.raises(EngineError, match="needs a CUDA device"):
        resolve_decode("graph", cpu)
    with pytest.raises(EngineError, match="unknown decode mode"):
        resolve_decode("fast", cpu)


def test_a_step_that_cannot_be_captured_runs_eagerly_with_the_same_tokens(monkeypatch):
    """A model whose step torch refuses to capture (transformers' grouped expert matmul copies from
    host memory) answers through the same fixed-shape step run eagerly, says so, and is not
    captured again. The capture is simulated here: the CPU has no CUDA graphs."""
    import contextlib

    from starcli.star import graphs

    capturing, attempts = [False], []

    class Stream:
        def wait_stream(self, other):
            pass

    @contextlib.contextmanager
    def graph(_):
        attempts.append(1)
        capturing[0] = True
        try:
            yield
        finally:
            capturing[0] = False

    for name, fake in (("current_stream", lambda device=None: Stream()), ("Stream", lambda device=None: Stream()),
                       ("stream", lambda s: contextlib.nullcontext()), ("CUDAGraph", lambda: None),
                       ("graph", graph), ("synchronize", lambda device=None: None)):
        monkeypatch.setattr(torch.cuda, name, fake)
    run = graphs.DecodeStep._run

    def refuse_while_capturing(self):
        if capturing[0]:
            raise RuntimeError("Cannot copy between CPU and CUDA tensors during CUDA graph capture\nmore")
        return run(self)

    monkeypatch.setattr(graphs.DecodeStep, "_run", refuse_while_capturing)
    _, star = tiny_pair("qwen2")
    doc = random_ids(300, 1)
    engine = StarEngine(star, kernel="math", decode="static")
    engine.decode = "graph"  # what auto resolves to on CUDA
    engine.encode_context(doc, plan_partition("dense", 300, 1))
    first, stats = engine.answer(random_ids(5, 2).tolist(), max_new_tokens=12)
    assert stats.decode_mode == engine_module.CAPTURE_FAILED and engine.decode == "static"
    second, stats = engine.answer(random_ids(3, 3).tolist(), max_new_tokens=12)
    assert stats.decode_mode == "static" and len(attempts) == 1

    eager = StarEngine(star, kernel="math", decode="eager")
    eager.encode_context(doc, plan_partition("dense", 300, 1))
    assert [first, second] == [eager.answer(random_ids(5, 2).tolist(), max_new_tokens=12)[0],
                               eager.answer(random_ids(3, 3).tolist(), max_new_tokens=12)[0]]
