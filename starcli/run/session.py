"""One ask/summarize run on one rank: load the model, encode the document, answer each question.

``run_job`` is the same in a single process and in every torchrun rank; only the ``Comm`` differs.
It reports through ``emit(event)`` with plain-JSON events, so a rank's events can be shipped to the
CLI process and rendered exactly as in the single-process case. Only rank 0 emits.
"""

from __future__ import annotations

import dataclasses
import os
import resource
from pathlib import Path
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..star.comm import Comm
from ..star.decode_threads import tuned_decode_threads
from ..star.engine import DEFAULT_PASS_TOKENS, StarEngine
from ..star.partition import plan_partition
from ..star.sampling import SamplingParams
from .textstream import TextStream

Emit = Callable[[dict], None]


@dataclass
class RunSettings:
    """Everything a rank needs besides the token ids; JSON-serialisable for the launcher."""

    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    dtype_reason: str = ""  # why "auto" chose ``dtype``, once it has been decided (app.check_settings)
    attention: str = "star"
    block_size: int | None = None
    anchor_size: int | None = None
    relay: int | None = None  # None: the engine's default (see starcli.star.partition.DEFAULT_RELAY)
    kernel: str = "auto"
    eager: bool = False  # phase 2 without a CUDA graph (the reference path; the CPU is always eager)
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    pass_tokens: int = DEFAULT_PASS_TOKENS
    trust_remote_code: bool = False
    allow_pickle: bool = False
    cache: bool = False  # keep / reuse the document's phase-1 KV on disk
    rope_scaling: str | None = None  # "yarn:4": stretch the rotary embedding (starcli.model.rope)

    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_p, self.top_k, self.seed)


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


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
    return device


def peak_memory_bytes(device: torch.device) -> int:
    """Peak GPU memory on CUDA, else the process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def load_for_job(settings: RunSettings, model_path: str, comm: Comm):
    """(model, tokenizer, dtype name, seconds) loaded with the star attention function registered."""
    from ..model.resolve import ModelSpec, load_model, pick_dtype
    from ..star import attention

    attention.register()
    dtype = pick_dtype(comm.device.type, settings.dtype)
    start = time.perf_counter()
    spec = ModelSpec(name=os.path.basename(model_path), kind="directory", path=Path(model_path))
    model, tokenizer = load_model(
        spec,
        device=str(comm.device),
        dtype=dtype,
        attn_implementation=attention.ATTENTION_NAME,
        trust_remote_code=settings.trust_remote_code,
        allow_pickle=settings.allow_pickle,
        rope_scaling=settings.rope_scaling,
    )
    return model, tokenizer, str(dtype).replace("torch.", ""), time.perf_counter() - start


def _dtype_choice(settings: RunSettings, device_type: str) -> str:
    from ..model.resolve import auto_dtype_reason

    if settings.dtype_reason:
        return settings.dtype_reason
    return auto_dtype_reason(device_type) if settings.dtype.strip().lower() == "auto" else "as asked"


def run_job(job: Job, comm: Comm, emit: Emit, loaded=None) -> dict | None:
    """Run ``job`` on this rank; returns the result dict on rank 0 (None elsewhere)."""
    settings = job.settings
    speak = emit if comm.rank == 0 else (lambda event: None)
    speak({"type": "stage", "stage": "loading model", "done": 0, "total": 1})
    model, tokenizer, dtype_name, load_seconds = loaded or load_for_job(settings, job.model_path, comm)

    from ..ingest.prompt import stop_token_ids

    engine = StarEngine(model, comm, kernel=settings.kernel, pass_tokens=settings.pass_tokens,
                        decode="eager" if settings.eager else "auto")
    warmup_seconds = engine.warm_up()  # once per process: a batch's later jobs find it done
    if comm.device.type == "cuda":
        # after loading: CUDA is initialised by then, and the peak still counts the weights
        torch.cuda.reset_peak_memory_stats(comm.device)
    speak({"type": "stage", "stage": "loading model", "done": 1, "total": 1})
    partition = plan_partition(
        settings.attention, len(job.document_ids), comm.world_size, settings.block_size, settings.anchor_size,
        relay=settings.relay,
    )
    total_blocks = partition.num_blocks
    speak({"type": "stage", "stage": "encoding blocks", "done": 0, "total": total_blocks})

    def on_progress(done: int, total: int) -> None:
        # rank 0's progress stands for all ranks: they run in lockstep on equal shares
        speak({"type": "stage", "stage": "encoding blocks", "done": done * comm.world_size, "total": total_blocks})

    doc = torch.tensor(job.document_ids, dtype=torch.long)
    key, cache_info, encode = None, None, None
    if settings.cache:
        key = _cache_key(job, partition, dtype_name, comm)
        encode, cache_info = _load_cached(engine, key, partition, comm, speak)
    if encode is None:
        encode = engine.encode_context(doc, partition, on_progress)
        if key is not None:
            from ..cache import documents as doc_cache

            doc_cache.save(key, engine.export_document_kv(), encode.seconds, job.sources)
    speak({"type": "stage", "stage": "encoding blocks", "done": total_blocks, "total": total_blocks})
    stops = stop_token_ids(tokenizer, model.config)
    answers = []
    for index, question_ids in enumerate(job.questions):
        if len(job.questions) > 1:
            speak({"type": "question", "index": index, "text": _nth(job.question_texts, index)})
        tokens, stats, text = stream_answer(engine, tokenizer, question_ids, settings, stops, speak)
        speak({"type": "answer_end", "index": index})
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
        "peak_memory_bytes": peak_memory_bytes(comm.device),
        "device": str(comm.device),
    }
    gathered = comm.gather_objects(rank_stats, dst=0)
    if comm.rank != 0:
        return None
    phase1 = max(r["phase1_s"] for r in gathered)
    result = {
        "answers": answers,
        "model": job.model_path,
        "dtype": dtype_name,
        "dtype_choice": _dtype_choice(settings, comm.device.type),
        "device": comm.device.type,
        "kernel": engine.kernel,
        "attention": settings.attention,
        "block_size": partition.block_size,
        "anchor_size": partition.anchor_size,
        "relay": partition.relay,  # 0 for dense and ring partitions
        "blocks": total_blocks,
        "ranks": comm.world_size,
        "document_tokens": len(job.document_ids),
        "model_load_s": load_seconds,
        "warmup_s": warmup_seconds,
        "phase1_s": phase1,
        "phase1_tokens_per_s": len(job.document_ids) / phase1 if phase1 > 0 else None,
        "per_rank": gathered,
        "cache": cache_info,
    }
    speak({"type": "result", "result": result})
    return result


def load_for_batch(batch: Batch, comm: Comm, emit: Emit):
    """The model for every job of ``batch``, loaded once; the first job's ``run_job`` then reports
    the load as done."""
    if comm.rank == 0:
        emit({"type": "stage", "stage": "loading model", "done": 0, "total": 1})
    return load_for_job(batch.jobs[0].settings, batch.jobs[0].model_path, comm)


def run_batch(batch: Batch, comm: Comm, emit: Emit, loaded=None) -> list[dict | None]:
    """Run each job of ``batch`` in order on one loaded model; a ``pass`` event {index, total}
    precedes each job's own events. Returns each job's result on rank 0 (None elsewhere)."""
    speak = emit if comm.rank == 0 else (lambda event: None)
    loaded = loaded or load_for_batch(batch, comm, emit)
    results = []
    for index, job in enumerate(batch.jobs):
        speak({"type": "pass", "index": index, "total": len(batch.jobs)})
        results.append(run_job(job, comm, emit, loaded))
    return results


def stream_answer(engine: StarEngine, tokenizer, question_ids: list[int], settings: RunSettings, stops: set[int],
                  emit: Emit, keep_history: bool = False):
    """Answer one question, emitting UTF-8-safe text deltas as ``token`` events.

    Returns (token ids, AnswerStats, the answer text)."""
    stream = TextStream(tokenizer, settings.stop)
    parts: list[str] = []

    def emit_text(delta: str) -> None:
        if delta:
            parts.append(delta)
            emit({"type": "token", "text": delta})

    def on_token(token: int) -> bool:
        emit_text(stream.feed(token))
        return stream.stopped

    with tuned_decode_threads(engine.device, on_token) as decode_on_token:
        tokens, stats = engine.answer(
            question_ids, max_new_tokens=settings.max_new_tokens, sampling=settings.sampling(),
            stop_token_ids=stops, on_token=decode_on_token, keep_history=keep_history,
        )
    emit_text(stream.flush())
    return tokens, stats, "".join(parts)


def _cache_key(job: Job, partition, dtype_name: str, comm: Comm):
    from ..cache import documents as doc_cache

    identity = doc_cache.model_identity(job.model_path)
    return doc_cache.EntryKey(
        # a stretched rotary embedding gives other KV for the same weights
        model=f"{identity}+rope:{job.settings.rope_scaling}" if job.settings.rope_scaling else identity,
        tokens_sha256=doc_cache.tokens_digest(job.document_ids),
        num_tokens=len(job.document_ids),
        attention=partition.attention,
        block_size=partition.block_size,
        anchor_size=partition.anchor_size,
        relay=str(partition.relay),
        dtype=dtype_name,
        world_size=comm.world_size,
        rank=comm.rank,
    )


def _load_cached(engine: StarEngine, key, partition, comm: Comm, speak: Emit):
    """(EncodeStats, info) when every rank has its entry; (None, info) to encode instead."""
    from ..cache import documents as doc_cache
    from ..star.engine import EncodeStats

    start = time.perf_counter()
    try:
        found = doc_cache.load(key)
    except doc_cache.DocCacheError as exc:
        speak({"type": "note", "text": f"ignoring a corrupt document cache entry ({exc}); encoding again"})
        doc_cache.remove(key.digest())
        found = None
    # ring's phase 1 has collectives, so ranks must agree: all load, or all encode
    if not comm.all_true(found is not None):
        return None, {"hit": False}
    tensors, record = found
    plan = partition.ranks[comm.rank]
    stats = EncodeStats(seconds=0.0, tokens=plan.num_tokens, blocks=len(plan.blocks))
    engine.import_document_kv(tensors, partition, stats)
    stats.seconds = time.perf_counter() - start
    return stats, {"hit": True, "load_s": stats.seconds, "saved_s": max(0.0, record["encode_seconds"] - stats.seconds)}


def _nth(items: list[str], index: int) -> str:
    return items[index] if index < len(items) else ""
