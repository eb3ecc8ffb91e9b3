"""Every option of a command checked before any work: a bad one is exit 2, naming it.

``check_settings`` also decides what ``auto`` means for the device and the dtype, once, here, so
that every rank (another process) runs what the report names. Nothing is written into what it is
given: the checks return the decided request or settings (``RunSettings`` is frozen).
"""

from __future__ import annotations

import dataclasses
import os

from ..errors import UsageError
from ..ingest.options import IngestOptions
from ..model.rope import NONE, parse_rope_scaling
from ..run.settings import RunSettings
from .requests import LONG_MODES, AskRequest, Placement

# A document at least this long is spread over all visible GPUs by default (--gpus unset).
MULTI_GPU_MIN_TOKENS = 32768
# More answer tokens than any model's window holds; a larger number is a typing mistake.
MAX_NEW_TOKENS = 1 << 20
# A collective that waits longer than a week is not waiting for anything.
MAX_TIMEOUT_S = 7 * 24 * 3600.0


def check_request(request: AskRequest) -> AskRequest:
    """Every option of an ask or summarize; returns the request with its settings decided."""
    request = read_rope_scaling(request)
    request = dataclasses.replace(request, settings=check_settings(request.settings))
    check_ingest(request.ingest)
    check_placement(request.placement)
    if request.long not in (*LONG_MODES, "summary"):
        raise UsageError(f"--long must be {' or '.join(LONG_MODES)}, got {request.long!r}")
    if request.long == "map" and request.truncate:
        raise UsageError("--long map reads the whole input in sections; --truncate cuts it: choose one")
    if request.window is not None and request.window < 1:
        raise UsageError(f"--window must be a positive number of tokens, got {request.window}")
    if any(not q.strip() for q in request.questions) or not request.questions:
        raise UsageError("the question is empty")
    if request.history and (len(request.questions) != 1 or request.long != "refuse" or request.truncate):
        raise UsageError("a conversation's history goes with one question, and without --long or --truncate")
    return request


def check_settings(settings: RunSettings) -> RunSettings:
    """The model and engine options, and the cache's environment; returns the settings with
    --device and --dtype ``auto`` decided."""
    from ..model.dtypes import auto_dtype_reason, pick_dtype
    from ..star.kernels import KERNELS

    settings = dataclasses.replace(settings, device=resolve_device(settings.device))
    try:
        settings.sampling().validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        dtype = pick_dtype(settings.device, settings.dtype)
    except UsageError as exc:
        raise UsageError(f"--dtype: {exc}") from None
    if settings.dtype.strip().lower() == "auto":
        settings = dataclasses.replace(settings, dtype=str(dtype).removeprefix("torch."),
                                       dtype_reason=auto_dtype_reason(settings.device))
    if settings.kernel not in KERNELS:
        raise UsageError(f"--kernel must be one of {', '.join(KERNELS)}, got {settings.kernel!r}")
    if settings.cache:
        from ..cache.documents import limit_bytes

        try:
            limit_bytes()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if not 1 <= settings.max_new_tokens <= MAX_NEW_TOKENS:
        raise UsageError(f"--max-new-tokens must be from 1 to {MAX_NEW_TOKENS}, got {settings.max_new_tokens}")
    check_star_options(settings.attention, settings.block_size, settings.anchor_size, settings.relay)
    return settings


def check_star_options(attention: str, block_size: int | None, anchor_size: int | None, relay: int | None) -> None:
    """--attention and the block settings, before the document's length is known (the rules:
    ``star.partition.check_options``)."""
    from ..star.partition import check_options

    check_options(attention, block_size, anchor_size, relay)


def resolve_device(device: str) -> str:
    """--device auto, cpu or cuda, as the device this run uses."""
    import torch

    name = device.strip().lower()
    if name not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {device!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return name


def check_ingest(ingest: IngestOptions) -> None:
    if ingest.max_file_bytes < 0:
        raise UsageError(f"--max-file-bytes must not be negative, got {ingest.max_file_bytes}")


def check_placement(placement: Placement) -> None:
    """Where the ranks run; --procs against the device is checked once the device is known."""
    if placement.procs is not None and placement.procs < 1:
        raise UsageError(f"--procs must be at least 1, got {placement.procs}")
    if placement.gpus is not None and placement.gpus < 0:
        raise UsageError(f"--gpus must not be negative, got {placement.gpus}")
    if placement.nnodes < 1:
        raise UsageError(f"--nnodes must be at least 1, got {placement.nnodes}")
    if not 0 <= placement.node_rank < placement.nnodes:
        raise UsageError(f"--node-rank must be from 0 to {placement.nnodes - 1} (--nnodes {placement.nnodes}), got {placement.node_rank}")
    if not 0 < placement.timeout_s <= MAX_TIMEOUT_S:
        raise UsageError(f"--timeout must be a positive number of seconds up to a week, got {placement.timeout_s:g}")
    if placement.nnodes > 1 and not placement.rdzv_endpoint:
        raise UsageError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (node 0's address, the same on every node)")
    cores = os.cpu_count() or 1
    most = max(4, 2 * cores)  # a few more than the cores still tests uneven shares; hundreds exhaust memory
    if placement.procs is not None and placement.procs > most:
        raise UsageError(f"--procs {placement.procs}: at most {most} CPU ranks on this machine's {cores} core(s); "
                         f"more only slow the run and can exhaust its memory")


def read_rope_scaling(request: AskRequest) -> AskRequest:
    """--rope-scaling: TYPE:FACTOR is checked; ``none`` turns the automatic stretch off."""
    settings = request.settings
    if settings.rope_scaling and settings.rope_scaling.strip().lower() == NONE:
        return dataclasses.replace(request, settings=dataclasses.replace(settings, rope_scaling=None), stretch=False)
    if settings.rope_scaling:
        parse_rope_scaling(settings.rope_scaling)
    return request


def world_size_for(placement: Placement, device: str, document_tokens: int) -> int:
    """Ranks per node. --procs (CPU) or --gpus; by default every visible GPU when the document is
    at least MULTI_GPU_MIN_TOKENS long (shorter ones gain less than launching costs), else 1."""
    if placement.procs is not None and placement.gpus is not None:
        raise UsageError("use --procs (CPU) or --gpus (CUDA), not both")
    if placement.procs is not None:
        if device != "cpu":
            raise UsageError("--procs runs CPU ranks: add --device cpu, or use --gpus on CUDA")
        return placement.procs
    if device != "cuda":
        if placement.gpus not in (None, 0):
            raise UsageError("--gpus needs a CUDA device")
        return 1
    import torch

    visible = torch.cuda.device_count()
    if placement.gpus is not None:
        if not 1 <= placement.gpus <= visible:
            raise UsageError(f"--gpus {placement.gpus}: {visible} GPU(s) visible")
        return placement.gpus
    return visible if document_tokens >= MULTI_GPU_MIN_TOKENS else 1

