"""What the commands do, between parsing (cli.py) and the engine: read the input, resolve the
model, build and tokenise the prompt, check it fits, then run in this process or on torchrun ranks.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import IO

from ..run.session import Batch, Job, RunSettings, load_for_batch, resolve_device, run_batch, run_job
from ..ingest.prompt import PromptError, build_prompt, document_text
from ..cli.render import Renderer
from ..model.rope import (DEFAULT_MODEL_MAX_FACTOR, NONE, RopeScalingError, fitting_factor, parse_rope_scaling, scaled_positions,
                   unsupported_reason)
from ..ingest import Document, IngestOptions, load_sources
from ..star.comm import Comm
from ..star.partition import plan_partition

# A document at least this long is spread over all visible GPUs by default (--gpus unset).
MULTI_GPU_MIN_TOKENS = 32768
# What ask does with an input longer than the window (--long); summarize always uses "summary".
LONG_MODES = ("refuse", "map")


class UserError(Exception):
    """A one-line message for the user; ``code`` is the exit status (1 input/runtime, 2 usage)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


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


def read_input(sources: list[str], ingest: IngestOptions, renderer: Renderer, stdin: IO[bytes] | None) -> Document:
    def on_skip(skip) -> None:
        renderer.note(f"skipped {skip.path}: {skip.reason}")

    document = load_sources(sources, ingest, stdin=stdin, on_skip=on_skip)
    for part in document.parts:
        if part.note:
            renderer.note(f"{part.path}: {part.note}")
    return document


def model_and_tokenizer(settings: RunSettings, renderer: Renderer):
    """(resolved model spec, its tokenizer): converts into the cache if needed, and refuses a model
    that ships its own code before anything from it is loaded."""
    from ..model.resolve import check_remote_code, resolve_model

    def progress(stage: str, done: int, total: int) -> None:
        renderer({"type": "stage", "stage": stage, "done": done, "total": total})

    spec = resolve_model(settings.model, progress=progress, allow_pickle=settings.allow_pickle)
    check_remote_code(spec, settings.trust_remote_code)
    return spec, load_tokenizer(spec.path, settings.trust_remote_code)


def load_tokenizer(path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - any loader failure is a user-facing model problem
        raise UserError(f"cannot load the tokenizer of {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


def max_positions(path) -> int | None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    return getattr(config, "max_position_embeddings", None)


@dataclass
class Window:
    """How many tokens one pass may hold (prompt + answer), and where the number comes from."""

    limit: int | None  # None: the model's config names no limit
    model_positions: int | None  # the model's positions (times the --rope-scaling factor)
    forced: bool = False  # --window set the limit
    rope_scalable: bool = False  # --rope-scaling would work with this model (offered in errors)


def model_window(path, settings: RunSettings, window: int | None) -> Window:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=settings.trust_remote_code)
    positions = getattr(config, "max_position_embeddings", None)
    reason = unsupported_reason(config)
    if settings.rope_scaling:
        if reason:
            raise UserError(f"--rope-scaling {settings.rope_scaling}: {reason}", code=2)
        positions = scaled_positions(positions, parse_rope_scaling(settings.rope_scaling))
    if window is not None and positions is not None and window > positions:
        raise UserError(f"--window {window} is more than the model's {positions} positions", code=2)
    limit = window if window is not None else positions
    return Window(limit, positions, window is not None, reason is None and not settings.rope_scaling)


def world_size_for(placement: Placement, device: str, document_tokens: int) -> int:
    """Ranks per node. --procs (CPU) or --gpus; by default every visible GPU when the document is
    at least MULTI_GPU_MIN_TOKENS long (shorter ones gain less than launching costs), else 1."""
    if placement.procs is not None and placement.gpus is not None:
        raise UserError("use --procs (CPU) or --gpus (CUDA), not both", code=2)
    if placement.procs is not None:
        if placement.procs < 1:
            raise UserError(f"--procs must be at least 1, got {placement.procs}", code=2)
        if device != "cpu":
            raise UserError("--procs runs CPU ranks: add --device cpu, or use --gpus on CUDA", code=2)
        return placement.procs
    if device != "cuda":
        if placement.gpus not in (None, 0):
            raise UserError("--gpus needs a CUDA device", code=2)
        return 1
    import torch

    visible = torch.cuda.device_count()
    if placement.gpus is not None:
        if not 1 <= placement.gpus <= visible:
            raise UserError(f"--gpus {placement.gpus}: {visible} GPU(s) visible", code=2)
        return placement.gpus
    return visible if document_tokens >= MULTI_GPU_MIN_TOKENS else 1


def _needed_tokens(prompts, settings: RunSettings) -> int:
    return len(prompts[0].document_ids) + max(len(p.question_ids) for p in prompts) + settings.max_new_tokens


def _too_long(prompts, settings: RunSettings, window: Window) -> UserError:
    """The refusal of an input over the window: both sizes, and every way forward."""
    doc_len = len(prompts[0].document_ids)
    question_len = max(len(p.question_ids) for p in prompts)
    which = "--window" if window.forced else "the model's window"
    choices = [
        "--long map (answer each window-sized section, then combine the answers)",
        "--truncate (read only the beginning)",
        "a lower --max-new-tokens",
        f"a larger --window (up to {window.model_positions})" if window.forced else "a model with a longer window",
    ]
    if window.rope_scalable and not window.forced:
        choices.append("--rope-scaling yarn:FACTOR (this model supports it; less accurate)")
    return UserError(
        f"the input is too long for the model: {doc_len} document + {question_len} question + "
        f"{settings.max_new_tokens} answer tokens = {_needed_tokens(prompts, settings)} > {window.limit} positions "
        f"({which}); use a smaller input, " + ", ".join(choices[:-1]) + " or " + choices[-1]
    )


def _truncate_document(tokenizer, document: str, questions: list[str], prompts, settings: RunSettings, limit: int, renderer: Renderer):
    """--truncate: cut the document's end until every question's prompt fits ``limit``."""
    doc_len = len(prompts[0].document_ids)
    question_len = max(len(p.question_ids) for p in prompts)
    budget = limit - question_len - settings.max_new_tokens
    overhead = len(tokenizer(document_text(tokenizer, "")[0], add_special_tokens=False)["input_ids"])
    if budget <= overhead:
        raise UserError(f"--max-new-tokens {settings.max_new_tokens} leaves no room for the document in {limit} positions")
    text = document
    while True:  # proportional cuts converge in a few rounds
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) + overhead <= budget:
            break
        keep = max(0, int(len(text) * (budget - overhead) / (len(ids) + 1) * 0.98))
        text = text[:keep]
    prompts = [build_prompt(tokenizer, text, q) for q in questions]
    renderer.note(
        f"--truncate: kept {len(prompts[0].document_ids)} of {doc_len} document tokens "
        f"({len(text)} of {len(document)} characters); the rest of the input was not read by the model"
    )
    return prompts


def _validate(request: AskRequest) -> None:
    """Every option of an ask or summarize, before any work: a bad one is exit 2 naming it."""
    _read_rope_scaling(request)
    check_settings(request.settings)
    check_ingest(request.ingest)
    check_placement(request.placement)
    if request.long not in (*LONG_MODES, "summary"):
        raise UserError(f"--long must be {' or '.join(LONG_MODES)}, got {request.long!r}", code=2)
    if request.window is not None and request.window < 1:
        raise UserError(f"--window must be a positive number of tokens, got {request.window}", code=2)
    if any(not q.strip() for q in request.questions) or not request.questions:
        raise UserError("the question is empty", code=2)


def check_settings(settings: RunSettings) -> None:
    """The model and engine options (resolving --device), and the cache's environment."""
    from ..model.resolve import ModelError, auto_dtype_reason, pick_dtype
    from ..star.kernels import KERNELS

    try:
        settings.device = resolve_device(settings.device)
        settings.sampling().validate()
    except ValueError as exc:
        raise UserError(str(exc), code=2)
    try:
        dtype = pick_dtype(settings.device, settings.dtype)
    except ModelError as exc:
        raise UserError(f"--dtype: {exc}", code=2)
    if settings.dtype.strip().lower() == "auto":
        # decided once, here, so that every rank (another process) runs the dtype the report names
        settings.dtype_reason = auto_dtype_reason(settings.device)
        settings.dtype = str(dtype).removeprefix("torch.")
    if settings.kernel not in KERNELS:
        raise UserError(f"--kernel must be one of {', '.join(KERNELS)}, got {settings.kernel!r}", code=2)
    if settings.cache:
        from ..cache.documents import limit_bytes

        try:
            limit_bytes()
        except ValueError as exc:
            raise UserError(str(exc), code=2)
    if settings.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {settings.max_new_tokens}", code=2)
    for name in ("block_size", "anchor_size"):
        value = getattr(settings, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be a positive number of tokens, got {value}", code=2)
    if settings.relay is not None and settings.relay < 0:
        raise UserError(f"--relay must not be negative, got {settings.relay}", code=2)
    if settings.attention not in ("star", "dense", "ring"):
        raise UserError(f"--attention must be star, dense or ring, got {settings.attention!r}", code=2)


def check_ingest(ingest: IngestOptions) -> None:
    if ingest.max_file_bytes < 0:
        raise UserError(f"--max-file-bytes must not be negative, got {ingest.max_file_bytes}", code=2)


def check_placement(placement: Placement) -> None:
    """Where the ranks run; --procs against the device is checked once the device is known."""
    if placement.procs is not None and placement.procs < 1:
        raise UserError(f"--procs must be at least 1, got {placement.procs}", code=2)
    if placement.gpus is not None and placement.gpus < 0:
        raise UserError(f"--gpus must not be negative, got {placement.gpus}", code=2)
    if placement.nnodes < 1:
        raise UserError(f"--nnodes must be at least 1, got {placement.nnodes}", code=2)
    if not 0 <= placement.node_rank < placement.nnodes:
        raise UserError(f"--node-rank must be from 0 to {placement.nnodes - 1} (--nnodes {placement.nnodes}), got {placement.node_rank}", code=2)
    if not placement.timeout_s > 0:
        raise UserError(f"--timeout must be a positive number of seconds, got {placement.timeout_s:g}", code=2)


def _read_rope_scaling(request: AskRequest) -> None:
    """--rope-scaling: TYPE:FACTOR is checked; ``none`` turns the automatic stretch off."""
    settings = request.settings
    if settings.rope_scaling and settings.rope_scaling.strip().lower() == NONE:
        settings.rope_scaling, request.stretch = None, False
        return
    try:
        if settings.rope_scaling:
            parse_rope_scaling(settings.rope_scaling)
    except RopeScalingError as exc:
        raise UserError(str(exc), code=2)


def automatic_stretch_limit(spec) -> float | None:
    """The largest YaRN factor starcli applies unasked: the embedded default model's documented 4;
    None (refuse, offering --rope-scaling) for models whose limit starcli cannot know."""
    return DEFAULT_MODEL_MAX_FACTOR if spec.kind == "default" else None


def _stretched(request: AskRequest, spec, window: Window, needed: int, renderer: Renderer) -> Window:
    """The window for an input of ``needed`` positions over the default model's trained window: its
    RoPE stretched with YaRN by the smallest factor that fits, up to the factor its authors document
    (then sections or a refusal use the stretched window). Other models keep their window (the
    refusal offers --rope-scaling), as do --rope-scaling, --rope-scaling none and --window."""
    settings = request.settings
    most = automatic_stretch_limit(spec)
    if (not request.stretch or settings.rope_scaling or window.forced or most is None
            or not window.rope_scalable or window.model_positions is None):
        return window
    factor = fitting_factor(needed, window.model_positions, most)
    if factor is None:
        return window
    settings.rope_scaling = f"yarn:{factor:g}"
    stretched = model_window(spec.path, settings, request.window)
    renderer.note(f"the input needs {needed} positions, more than the model's trained {window.model_positions}: "
                  f"its RoPE is stretched with YaRN x{factor:g} to {stretched.limit} (less accurate past the trained "
                  f"length; --rope-scaling none refuses instead)")
    return stretched


def ask(request: AskRequest, renderer: Renderer, stdin: IO[bytes] | None = None) -> dict:
    started = time.perf_counter()
    settings = request.settings
    _validate(request)

    renderer({"type": "stage", "stage": "reading input", "done": 0, "total": 1})
    ingest_start = time.perf_counter()
    document = read_input(request.sources, request.ingest, renderer, stdin)
    ingest_s = time.perf_counter() - ingest_start
    renderer({"type": "stage", "stage": "reading input", "done": 1, "total": 1})

    spec, tokenizer = model_and_tokenizer(settings, renderer)
    request_scaling = settings.rope_scaling  # what the user asked for, before any automatic stretch
    window = model_window(spec.path, settings, request.window)
    renderer({"type": "stage", "stage": "tokenizing", "done": 0, "total": 1})
    tokenize_start = time.perf_counter()
    text = document.render()
    try:
        prompts = [build_prompt(tokenizer, text, q) for q in request.questions]
    except PromptError as exc:
        raise UserError(str(exc), code=2)
    over_window = window.limit is not None and _needed_tokens(prompts, settings) > window.limit
    if over_window:
        window = _stretched(request, spec, window, _needed_tokens(prompts, settings), renderer)
        over_window = _needed_tokens(prompts, settings) > window.limit
    long_input = over_window and not request.truncate and request.long != "refuse"
    if over_window and not long_input:
        if not request.truncate:
            raise _too_long(prompts, settings, window)
        prompts = _truncate_document(tokenizer, text, request.questions, prompts, settings, window.limit, renderer)
    tokenize_s = time.perf_counter() - tokenize_start
    renderer({"type": "stage", "stage": "tokenizing", "done": 1, "total": 1})
    renderer.extra = {
        "sources": [p.path for p in document.parts],
        "skipped": len(document.skipped),
        "files": len(document.parts),
        "ingest_s": ingest_s,
        "tokenize_s": tokenize_s,
        "model_name": spec.name,
        "window": window.limit,
    }
    if settings.rope_scaling:
        renderer.extra["rope_scaling"] = settings.rope_scaling
        renderer.extra["rope_scaling_automatic"] = request.stretch and not request_scaling

    if long_input:
        if request.placement.nnodes > 1:
            raise UserError("inputs over the window are read in passes on one machine only for now; use --nnodes 1", code=2)
        world = world_size_for(request.placement, settings.device, min(window.limit, len(prompts[0].document_ids)))
        execute = Executor(settings, request.placement, world, str(spec.path))
        renderer.result = _run_long(request, text, _needed_tokens(prompts, settings), tokenizer, window, execute, renderer, started)
    else:
        doc_ids = prompts[0].document_ids
        job = Job(settings, str(spec.path), doc_ids, [p.question_ids for p in prompts], list(request.questions),
                  sources=[p.path for p in document.parts])
        world = world_size_for(request.placement, settings.device, len(doc_ids))
        execute = Executor(settings, request.placement, world, str(spec.path))
        execute.check_partition(len(doc_ids))
        execute(job, renderer)
    totals = {"total_s": time.perf_counter() - started}
    if renderer.result is None and request.placement.node_rank != 0:
        renderer.note(f"node {request.placement.node_rank}: its ranks finished; node 0 prints the answer")
        return {}
    renderer.finish(totals)
    return {**(renderer.result or {}), **renderer.extra, **totals}


class Executor:
    """Runs a Job, or a Batch of them, in this process or on torchrun ranks as placed. In this
    process a batch's model stays loaded for the next batch (the levels of a long input)."""

    def __init__(self, settings: RunSettings, placement: Placement, world: int, model_path: str):
        self.settings = settings
        self.placement = placement
        self.world = world
        self.model_path = model_path
        self.loaded = None

    @property
    def ranks(self) -> int:
        return self.world * self.placement.nnodes

    def check_partition(self, document_tokens: int) -> None:
        s = self.settings
        try:
            plan_partition(s.attention, document_tokens, self.ranks, s.block_size, s.anchor_size, relay=s.relay)
        except ValueError as exc:
            raise UserError(str(exc), code=2)

    def __call__(self, job: Job | Batch, emit) -> None:
        if isinstance(job, Batch):
            for one in job.jobs:
                self.check_partition(len(one.document_ids))
        if self.ranks > 1:
            from ..run.launch import LaunchError, LaunchOptions, run_distributed

            p = self.placement
            options = LaunchOptions(self.world, self.settings.device, p.nnodes, p.node_rank, p.rdzv_endpoint, p.timeout_s)
            try:
                run_distributed(job, options, emit)
            except LaunchError as exc:
                raise UserError(str(exc))
            return
        import torch

        comm = Comm(device=torch.device("cuda", 0) if self.settings.device == "cuda" else torch.device("cpu"))
        if not isinstance(job, Batch):
            run_job(job, comm, emit)
            return
        self.loaded = self.loaded or load_for_batch(job, comm, emit)
        run_batch(job, comm, emit, self.loaded)


def _run_long(request: AskRequest, text: str, needed: int, tokenizer, window: Window, execute: Executor,
              renderer: Renderer, started: float) -> dict:
    """Read an input over the window in passes (starcli.app.longdoc); the result of the final pass,
    with the whole run's facts under ``long``."""
    from .longdoc import LongInputError, answer_long, summarize_long
    from .passes import PassRunner

    how = ("summarizing it section by section, then combining the section summaries in order"
           if request.long == "summary" else
           "--long map: asking each section, then combining the partial answers in order")
    renderer.note(f"the prompt needs {needed} tokens, more than the window of {window.limit}: {how}")
    runner = PassRunner(request.settings, execute.model_path, tokenizer, window.limit, execute, renderer)
    try:
        if request.long == "summary":
            run = summarize_long(text, request.words, runner)
        else:
            run = answer_long(text, request.questions, runner)
    except LongInputError as exc:
        raise UserError(str(exc), exc.code)
    return runner.result(run, request.questions, started)


def summary_question(words: int | None) -> str:
    length = f" in about {words} words" if words else ""
    return (
        f"Summarize the document above{length}. Cover it from beginning to end, in order, "
        "and name the main parts (files, chapters or sections) it consists of."
    )


def count(sources: list[str], settings: RunSettings, ingest: IngestOptions, placement: Placement, renderer: Renderer, stdin=None) -> dict:
    """Tokens per part and in total, and the blocks/ranks a run would use (a dry run)."""
    check_settings(settings)
    check_ingest(ingest)
    check_placement(placement)
    document = read_input(sources, ingest, renderer, stdin)
    spec, tokenizer = model_and_tokenizer(settings, renderer)
    parts = [{"path": p.path, "tokens": len(tokenizer(p.text, add_special_tokens=False)["input_ids"])} for p in document.parts]
    doc_ids = build_prompt(tokenizer, document.render(), "?").document_ids
    world = world_size_for(placement, settings.device, len(doc_ids)) * placement.nnodes
    try:
        partition = plan_partition(settings.attention, len(doc_ids), world, settings.block_size, settings.anchor_size,
                                   relay=settings.relay)
    except ValueError as exc:
        raise UserError(str(exc), code=2)
    return {
        "model": spec.name,
        "parts": parts,
        "skipped": [{"path": s.path, "reason": s.reason} for s in document.skipped],
        "document_tokens": len(doc_ids),
        "max_positions": max_positions(spec.path),
        "attention": partition.attention,
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


def chat(request: AskRequest, renderer: Renderer, read_line, stdin=None) -> None:
    """Encode the input once, then answer questions read one at a time until /exit or end of input.
    Follow-ups keep the conversation (earlier turns stay in the tail KV). One process."""
    import torch

    from ..run.session import load_for_job, stream_answer
    from ..ingest.prompt import followup_ids, question_text, stop_token_ids
    from ..star.engine import StarEngine

    settings = request.settings
    _read_rope_scaling(request)
    check_settings(settings)
    check_ingest(request.ingest)
    if (request.placement.procs or 1) > 1 or (request.placement.gpus or 1) > 1:
        raise UserError("chat runs in one process; use `starcli ask -q ... -q ...` on several ranks", code=2)
    document = read_input(request.sources, request.ingest, renderer, stdin)
    spec, tokenizer = model_and_tokenizer(settings, renderer)
    doc_ids = build_prompt(tokenizer, document.render(), "?").document_ids
    limit = model_window(spec.path, settings, None).limit
    if limit and len(doc_ids) + settings.max_new_tokens + 32 > limit:
        raise UserError(
            f"the input is too long for the model: {len(doc_ids)} document tokens + room for a question and "
            f"{settings.max_new_tokens} answer tokens > {limit} positions; use a smaller input or a lower --max-new-tokens"
        )
    comm = Comm(device=torch.device("cuda", 0) if settings.device == "cuda" else torch.device("cpu"))
    renderer({"type": "stage", "stage": "loading model", "done": 0, "total": 1})
    model, _, _, _ = load_for_job(settings, str(spec.path), comm)
    renderer({"type": "stage", "stage": "loading model", "done": 1, "total": 1})
    engine = StarEngine(model, comm, kernel=settings.kernel, pass_tokens=settings.pass_tokens,
                        decode="eager" if settings.eager else "auto")
    engine.warm_up()
    partition = plan_partition(settings.attention, len(doc_ids), 1, settings.block_size, settings.anchor_size,
                               relay=settings.relay)
    encode = engine.encode_context(torch.tensor(doc_ids), partition,
                                   lambda d, t: renderer({"type": "stage", "stage": "encoding blocks", "done": d, "total": t}))
    renderer.note(f"encoded {len(doc_ids)} document tokens in {encode.seconds:.2f} s; ask away (/exit or Ctrl-D to leave)")
    stops = stop_token_ids(tokenizer, model.config)
    turns = 0
    while True:
        line = read_line()
        if line is None or line.strip() in ("/exit", "/quit"):
            return
        if not line.strip():
            continue
        ids = followup_ids(tokenizer, line) if turns else tokenizer(question_text(tokenizer, line.strip()), add_special_tokens=False)["input_ids"]
        if limit and len(doc_ids) + engine.history + len(ids) + settings.max_new_tokens > limit:
            renderer.note("the conversation no longer fits the model's window; starting a fresh one")
            turns = 0
            ids = tokenizer(question_text(tokenizer, line.strip()), add_special_tokens=False)["input_ids"]
        tokens, stats, _ = stream_answer(engine, tokenizer, ids, settings, stops, renderer, keep_history=turns > 0)
        renderer({"type": "answer_end", "index": turns})
        rate = stats.decode_tokens / stats.decode_seconds if stats.decode_seconds > 0 else 0.0
        renderer.note(f"{len(tokens)} tokens, first after {stats.prefill_seconds:.2f} s, {rate:.1f} tokens/s")
        turns += 1
