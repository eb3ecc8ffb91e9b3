"""One ask/summarize job on one rank: a session loads the model, encodes the document, answers
each question, and reports through ``emit(event)``.

``run_job`` is the same in a single process and in every torchrun rank; only the ``Comm`` differs.
Events are ``starcli.events`` (one JSON form), so a rank's events can be shipped to the CLI process
and rendered exactly as in the single-process case. Only rank 0 emits; its last event is the ``result``.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..star.comm import Comm
from ..star.partition import reason_line
from .. import events
from ..events import Emit
from .memory import DocumentMemory
from .session import CacheIdentity, Session
from .settings import Batch, Job


def _dtype_choice(job: Job, device_type: str) -> str:
    from ..model.dtypes import auto_dtype_reason

    if job.settings.dtype_reason:
        return job.settings.dtype_reason
    return auto_dtype_reason(device_type) if job.settings.dtype.strip().lower() == "auto" else "as asked"


def run_job(job: Job, comm: Comm, emit: Emit, session: Session | None = None, *, memory: DocumentMemory | None = None,
            cancelled: Callable[[], bool] | None = None) -> dict | None:
    """Run ``job`` on this rank (on ``session``'s model when given); returns the result dict on
    rank 0 (None elsewhere). A resident session (``starcli serve``) passes the ``memory`` its
    encoded documents stay in, and ``cancelled``, true once the request's client has gone."""
    settings = job.settings
    speak = emit if comm.rank == 0 else events.discard
    speak(events.Stage(events.LOADING_MODEL, 0))
    session = session or Session.load(settings, job.model_path, comm)
    if comm.device.type == "cuda":
        # after loading: CUDA is initialised by then, and the peak still counts the weights
        torch.cuda.reset_peak_memory_stats(comm.device)
    speak(events.Stage(events.LOADING_MODEL, 1))
    partition = session.plan(len(job.document_ids), settings.attention, settings.block_size, settings.anchor_size,
                             settings.relay)
    total_blocks = partition.num_blocks
    speak(events.Stage(events.ENCODING_BLOCKS, 0, total_blocks))

    def on_progress(done: int, total: int) -> None:
        # rank 0's progress stands for all ranks: they run in lockstep on equal shares
        speak(events.Stage(events.ENCODING_BLOCKS, done * comm.world_size, total_blocks))
        if cancelled is not None and not comm.distributed:
            # between passes of phase 1; ranks are not asked here, where their pass counts may differ
            session.check_cancelled(cancelled)

    cache = CacheIdentity(job.model_path, settings.rope_scaling, tuple(job.sources)) if settings.cache else None
    encode, cache_info = session.encode(job.document_ids, partition, on_progress, cache=cache, memory=memory, emit=speak,
                                        question_ids=job.questions[0] if job.questions else None)
    speak(events.Stage(events.ENCODING_BLOCKS, total_blocks, total_blocks))
    answers = []
    for index, question_ids in enumerate(job.questions):
        if len(job.questions) > 1:
            speak(events.Question(index, _nth(job.question_texts, index)))
        tokens, stats, text = session.stream(question_ids, settings, speak, cancelled=cancelled)
        speak(events.AnswerEnd(index))
        answers.append(
            {
                "question": _nth(job.question_texts, index),
                "answer": text,
                "answer_tokens": len(tokens),
                "question_tokens": stats.question_tokens,
                # phase 1 runs once, before the first question only
                "time_to_first_token_s": (encode.seconds if index == 0 else 0.0) + stats.prefill_seconds,
                "prefill_s": stats.prefill_seconds,
                "decode_s": stats.decode_seconds,
                "decode_tokens_per_s": stats.decode_tokens / stats.decode_seconds if stats.decode_seconds > 0 else None,
                "decode_mode": stats.decode_mode,
                "capture_s": stats.capture_seconds,
                "stop_reason": stats.stop_reason,
            }
        )
    rank_stats = {
        "rank": comm.rank,
        "phase1_s": encode.seconds,
        "kv_tokens": encode.tokens,
        "anchor_tokens": encode.anchor_tokens,
        "blocks": encode.blocks,
        "peak_memory_bytes": session.peak_memory_bytes(),
        "device": str(comm.device),
    }
    gathered = comm.gather_objects(rank_stats, dst=0)
    if comm.rank != 0:
        return None
    phase1 = max(r["phase1_s"] for r in gathered)
    result = {
        "answers": answers,
        "model": job.model_path,
        "dtype": session.dtype_name,
        "dtype_choice": _dtype_choice(job, comm.device.type),
        "device": comm.device.type,
        "kernel": session.engine.kernel,
        "decode_weights": "int8" if session.int8_decode else None,  # None: the weights as loaded
        "attention": partition.attention,
        "attention_reason": reason_line(settings.attention, partition),
        "block_size": partition.block_size,
        "anchor_size": partition.anchor_size,
        "relay": partition.relay,  # 0 for dense and ring partitions
        "blocks": total_blocks,
        "ranks": comm.world_size,
        "document_tokens": len(job.document_ids),
        "sampling": settings.sampling_report(),
        "model_load_s": session.load_seconds,
        "warmup_s": session.warmup_seconds,
        "phase1_s": phase1,
        "phase1_tokens_per_s": len(job.document_ids) / phase1 if phase1 > 0 else None,
        "per_rank": gathered,
        "cache": cache_info,
    }
    speak(events.Result(result))
    return result


def run_batch(batch: Batch, comm: Comm, emit: Emit, session: Session | None = None, **resident) -> list[dict | None]:
    """Run each job of ``batch`` in order on one session; a ``PassStart`` event precedes each job's
    own events. Returns each job's result on rank 0 (None elsewhere)."""
    speak = emit if comm.rank == 0 else events.discard
    if session is None:
        speak(events.Stage(events.LOADING_MODEL, 0))
        session = Session.load(batch.jobs[0].settings, batch.jobs[0].model_path, comm)
    results = []
    for index, job in enumerate(batch.jobs):
        speak(events.PassStart(index, len(batch.jobs)))
        results.append(run_job(job, comm, emit, session, **resident))
    return results


def _nth(items: list[str], index: int) -> str:
    return items[index] if index < len(items) else ""
