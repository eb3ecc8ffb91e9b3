"""``ask``, ``summarize`` and ``count``: read the input, resolve the model, build and tokenise the
prompt, fit it to the window, then run it (``run.execute``) here or on torchrun ranks.

Everything goes out through ``emit(event)`` (progress, notes, the streamed answer); the functions
return the run's result for the caller to report.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from typing import IO, TYPE_CHECKING

from .. import events
from ..errors import UsageError
from ..events import Emit
from ..ingest.document import Document
from ..ingest.loader import load_sources
from ..ingest.options import IngestOptions
from ..ingest.prompt import ANSWER_INSTRUCTION, PromptParts, build_prompt, conversation_ids
from ..run.settings import Job, RunSettings
from . import checks
from .decoding import decide_sampling
from .loading import executor_for, model_and_tokenizer
from .requests import AskRequest, Placement
from .window import model_config, model_window, needed_tokens, stretched, too_long, truncate_document

if TYPE_CHECKING:
    from .resident import Resident


def note(emit: Emit, text: str) -> None:
    emit(events.Note(text))


def stage(emit: Emit, name: str, done: int, total: int = 1) -> None:
    emit(events.Stage(name, done, total))


def read_input(sources: list[str], ingest: IngestOptions, emit: Emit, stdin: IO[bytes] | None) -> Document:
    document = load_sources(sources, ingest, stdin=stdin, on_skip=lambda skip: note(emit, f"skipped {skip.path}: {skip.reason}"))
    for part in document.parts:
        if part.note:
            note(emit, f"{part.path}: {part.note}")
    return document


def ask(request: AskRequest, emit: Emit, stdin: IO[bytes] | None = None, *, document: Document | None = None,
        resident: Resident | None = None) -> dict:
    """One ask or summarize; returns the result (empty on a node other than node 0). A server
    gives the ``document`` its client read, and its ``resident`` model and executor."""
    started = time.perf_counter()
    if resident is not None:
        request = resident.adopt(request)
    request = checks.check_request(request)
    settings = request.settings

    stage(emit, events.READING_INPUT, 0)
    ingest_start = time.perf_counter()
    if document is None:
        document = read_input(request.sources, request.ingest, emit, stdin)
    ingest_s = time.perf_counter() - ingest_start
    stage(emit, events.READING_INPUT, 1)

    spec, tokenizer = (resident.spec, resident.tokenizer) if resident else model_and_tokenizer(settings, emit)
    settings = decide_sampling(settings, spec.path)
    request = dataclasses.replace(request, settings=settings)
    asked_scaling = settings.rope_scaling  # what the user asked for, before any automatic stretch
    config = model_config(spec.path, settings.trust_remote_code)
    window = model_window(config, settings, request.window)
    stage(emit, events.TOKENIZING, 0)
    tokenize_start = time.perf_counter()
    text = document.render()
    # a summary asks for its length itself: no instruction to keep the answer short
    system = None if request.long == "summary" else ANSWER_INSTRUCTION
    build = resident.prompt if resident is not None else functools.partial(build_prompt, tokenizer)
    prompts = [build(text, q, system) for q in request.questions]
    if request.history:
        prompts = [follow_up(tokenizer, prompts[0], request, window.limit, emit)]
    needed = needed_tokens(prompts, settings)
    if window.limit is not None and needed > window.limit:
        window, settings = stretched(request, config, window, needed, lambda text: note(emit, text))
        request = dataclasses.replace(request, settings=settings)
    over_window = window.limit is not None and needed > window.limit
    long_input = over_window and not request.truncate and request.long != "refuse"
    if over_window and not long_input:
        if not request.truncate:
            raise too_long(prompts, settings, window)
        prompts = truncate_document(tokenizer, text, request.questions, prompts, settings, window.limit,
                                    lambda text: emit(events.Note(text, warning=True)))
    tokenize_s = time.perf_counter() - tokenize_start
    stage(emit, events.TOKENIZING, 1)
    facts = {
        "sources": [p.path for p in document.parts],
        "skipped": len(document.skipped),
        "files": len(document.parts),
        "ingest_s": ingest_s,
        "tokenize_s": tokenize_s,
        "model_name": spec.name,
        "window": window.limit,
    }
    if settings.rope_scaling:
        facts["rope_scaling"] = settings.rope_scaling
        facts["rope_scaling_automatic"] = request.stretch and not asked_scaling

    if long_input:
        if request.placement.nnodes > 1:
            raise UsageError("inputs over the window are read in passes on one machine only for now; use --nnodes 1")
        from .passes import read_long

        if resident is not None:
            execute = resident.executor
        else:
            world = checks.world_size_for(request.placement, settings.device, min(window.limit, len(prompts[0].document_ids)))
            execute = executor_for(settings, request.placement, world, str(spec.path), tokenizer)
        result = read_long(request, text, needed, tokenizer, window.limit, execute, emit, started)
    else:
        doc_ids = prompts[0].document_ids
        job = Job(settings, str(spec.path), doc_ids, [p.question_ids for p in prompts], list(request.questions),
                  sources=[p.path for p in document.parts])
        if resident is not None:
            execute = resident.executor
        else:
            world = checks.world_size_for(request.placement, settings.device, len(doc_ids))
            execute = executor_for(settings, request.placement, world, str(spec.path), tokenizer)
        results = execute(job, emit)
        result = results[-1] if results else None
    if result is None:  # another node's ranks: node 0 has the answer
        note(emit, f"node {request.placement.node_rank}: its ranks finished; node 0 prints the answer")
        return {}
    if resident is not None:
        facts.update(resident.facts())
    return {**result, **facts, "total_s": time.perf_counter() - started}


def follow_up(tokenizer, prompt: PromptParts, request: AskRequest, limit: int | None, emit: Emit) -> PromptParts:
    """The prompt of a follow-up question: its conversation so far after the document, or, once
    that no longer fits the window, the question alone (as ``chat`` in one process does)."""
    ids = conversation_ids(tokenizer, request.history, request.questions[0])
    if limit is not None and len(prompt.document_ids) + len(ids) + request.settings.max_new_tokens > limit:
        note(emit, "the conversation no longer fits the model's window; starting a fresh one")
        return prompt
    return dataclasses.replace(prompt, question_ids=ids)


def count(sources: list[str], settings: RunSettings, ingest: IngestOptions, placement: Placement, emit: Emit,
          stdin: IO[bytes] | None = None) -> dict:
    """Tokens per part and in total, and the blocks/ranks a run would use (a dry run)."""
    from ..star.partition import plan_partition, reason_line

    settings = dataclasses.replace(settings, device=checks.resolve_device(settings.device))
    checks.check_star_options(settings.attention, settings.block_size, settings.anchor_size, settings.relay)
    checks.check_ingest(ingest)
    checks.check_placement(placement)
    document = read_input(sources, ingest, emit, stdin)
    spec, tokenizer = model_and_tokenizer(settings, emit)
    parts = [{"path": p.path, "tokens": len(tokenizer(p.text, add_special_tokens=False)["input_ids"])} for p in document.parts]
    doc_ids = build_prompt(tokenizer, document.render(), "?").document_ids
    world = checks.world_size_for(placement, settings.device, len(doc_ids)) * placement.nnodes
    partition = plan_partition(settings.attention, len(doc_ids), world, settings.block_size, settings.anchor_size,
                               relay=settings.relay, device_type=settings.device)
    return {
        "model": spec.name,
        "parts": parts,
        "skipped": [{"path": s.path, "reason": s.reason} for s in document.skipped],
        "document_tokens": len(doc_ids),
        "max_positions": getattr(model_config(spec.path, settings.trust_remote_code), "max_position_embeddings", None),
        "attention": partition.attention,
        "attention_reason": reason_line(settings.attention, partition),
        "block_size": partition.block_size,
        "anchor_size": partition.anchor_size,
        "relay": partition.relay,  # 0 for dense and ring partitions
        "blocks": partition.num_blocks,
        "ranks": world,
        "blocks_per_rank": [len(r.blocks) for r in partition.ranks],
    }


def stdin_is_piped(stream=None) -> bool:
    stream = stream or sys.stdin
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return False
