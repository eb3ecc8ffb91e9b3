"""What a rank is told: the run's settings and the token ids of each pass, as plain JSON.

A ``Job`` is one document and its questions; a ``Batch`` is several jobs run one after another on
one loaded model (the passes of a long input). The launcher writes them to a private file that
each torchrun rank reads, so no rank re-reads files or stdin. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..star.partition import DEFAULT_PASS_TOKENS


@dataclass(frozen=True)
class RunSettings:
    """Everything a rank needs besides the token ids; JSON-serialisable for the launcher. Frozen:
    the checks (``app.checks``, ``app.decoding``, ``app.window``) return decided copies."""

    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    dtype_reason: str = ""  # why "auto" chose ``dtype``, once it has been decided (app.checks)
    attention: str = "auto"  # "auto": chosen per document by star.policy (star.partition.plan_auto)
    block_size: int | None = None
    anchor_size: int | None = None
    relay: int | None = None  # None: the engine's default (see starcli.star.partition.DEFAULT_RELAY)
    kernel: str = "auto"
    eager: bool = False  # phase 2 without a CUDA graph (the reference path; the CPU is always eager)
    max_new_tokens: int = 512
    # None: the model's own default (``app.decoding`` decides them once the model is known), else
    # greedy, no top-p/top-k limit and no penalty
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    sampling_from: str = ""  # where the decided sampling came from, for the report
    stop: list[str] = field(default_factory=list)
    pass_tokens: int = DEFAULT_PASS_TOKENS
    trust_remote_code: bool = False
    allow_pickle: bool = False
    cache: bool = False  # keep / reuse the document's phase-1 KV on disk
    rope_scaling: str | None = None  # "yarn:4": stretch the rotary embedding (starcli.model.rope)

    def sampling(self):
        from ..star.sampling import SamplingParams

        def given(value, neutral):
            return neutral if value is None else value

        return SamplingParams(given(self.temperature, 0.0), given(self.top_p, 1.0), given(self.top_k, 0), self.seed,
                              given(self.repetition_penalty, 1.0))

    def sampling_report(self) -> dict:
        """The sampling a run used, as the report and ``--json`` show it."""
        params = self.sampling()
        return {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "repetition_penalty": params.repetition_penalty,
            "seed": None if params.greedy else params.seed,
            "from": self.sampling_from,
        }


@dataclass
class Job:
    settings: RunSettings
    model_path: str  # a resolved transformers folder
    document_ids: list[int]
    questions: list[list[int]]  # token ids of each question part
    question_texts: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # the parts' paths, shown by `cache ls`

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "settings": dataclasses.asdict(self.settings)}

    @classmethod
    def from_json(cls, data: dict) -> "Job":
        return cls(**{**data, "settings": RunSettings(**data["settings"])})


@dataclass
class Batch:
    """Several jobs run one after another on one loaded model: the passes of a long input
    (starcli.app.longdoc), which are known together but each need their own document encoding."""

    jobs: list[Job]

    def to_json(self) -> dict:
        return {"batch": [job.to_json() for job in self.jobs]}


def job_from_json(data: dict) -> Job | Batch:
    if "batch" in data:
        return Batch([Job.from_json(job) for job in data["batch"]])
    return Job.from_json(data)
