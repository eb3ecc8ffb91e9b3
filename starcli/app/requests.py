"""What a command asks for, as plain data: the sources, the questions, and how to run them."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ingest.options import IngestOptions
from ..run.settings import RunSettings

# What ask does with an input longer than the window (--long); summarize always uses "summary".
LONG_MODES = ("refuse", "map")


@dataclass
class Placement:
    """Where the ranks run."""

    procs: int | None = None  # CPU processes (gloo)
    gpus: int | None = None  # GPUs (nccl); None = the documented default rule
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    timeout_s: float = 120.0


@dataclass
class AskRequest:
    sources: list[str]
    questions: list[str]
    settings: RunSettings = field(default_factory=RunSettings)
    ingest: IngestOptions = field(default_factory=IngestOptions)
    placement: Placement = field(default_factory=Placement)
    truncate: bool = False
    long: str = "refuse"  # input over the window: refuse, map (ask --long map) or summary (summarize)
    words: int | None = None  # summarize --words
    window: int | None = None  # --window: a smaller window than the model's
    stretch: bool = True  # the default model may stretch its RoPE for longer input (--rope-scaling none: never)
    # earlier (question, answer) turns of a conversation about the document (chat through a server)
    history: list[tuple[str, str]] = field(default_factory=list)
