"""The model a run uses, resolved and its tokenizer loaded, and the executor that runs its jobs."""

from __future__ import annotations

from .. import events
from ..events import Emit
from ..run.settings import RunSettings
from .requests import Placement


def model_and_tokenizer(settings: RunSettings, emit: Emit):
    """(resolved model spec, its tokenizer): converts into the cache if needed, and refuses a model
    that ships its own code before anything from it is loaded. (A family the engine cannot run is
    refused where the weights load, ``model.load.check_family``: reading its class here would cost
    a launcher process the model code's imports.)"""
    from ..model.load import check_remote_code, load_tokenizer
    from ..model.resolve import resolve_model

    spec = resolve_model(settings.model, progress=lambda name, done, total: emit(events.Stage(name, done, total)),
                         allow_pickle=settings.allow_pickle)
    check_remote_code(spec, settings.trust_remote_code)
    return spec, load_tokenizer(spec.path, settings.trust_remote_code)


def executor_for(settings: RunSettings, placement: Placement, world: int, model_path: str, tokenizer,
                 memory_bytes: int | None = None):
    """Runs jobs in this process (reusing ``tokenizer``) or, for several ranks, on torchrun; with
    ``memory_bytes``, resident (a server's: ranks and encoded documents kept between jobs)."""
    from ..run.execute import Executor
    from ..run.launch import LaunchOptions

    ranks = None
    if world * placement.nnodes > 1:
        ranks = LaunchOptions(world, settings.device, placement.nnodes, placement.node_rank, placement.rdzv_endpoint,
                              placement.timeout_s)
    return Executor(settings, model_path, ranks, tokenizer, memory_bytes)
