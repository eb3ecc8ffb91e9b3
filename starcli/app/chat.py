"""``chat``: encode the input once, then answer questions read one at a time (one process).

Follow-ups keep the conversation: earlier turns stay in the session's tail KV, until the
conversation no longer fits the window and a fresh one starts from the document.
"""

from __future__ import annotations

from typing import IO, Callable

from .. import events
from ..errors import InputError, UsageError
from ..events import Emit
from ..ingest.prompt import build_prompt, followup_ids, question_text
from ..star.partition import reason_line
from . import checks
from .ask import note, read_input, stage
from .loading import executor_for, model_and_tokenizer
from .decoding import decide_sampling, describe_sampling
from .requests import AskRequest
from .window import model_config, model_window

# room kept for a question when checking that the document leaves space for a conversation
_QUESTION_ROOM = 32


def questions(read_line: Callable[[], str | None]):
    """The user's questions, one per line, until end of input or /exit (blank lines skipped)."""
    while True:
        line = read_line()
        if line is None or line.strip() in ("/exit", "/quit"):
            return
        if line.strip():
            yield line.strip()


def chat(request: AskRequest, emit: Emit, read_line: Callable[[], str | None], stdin: IO[bytes] | None = None) -> None:
    request = checks.read_rope_scaling(request)
    settings = checks.check_settings(request.settings)
    checks.check_ingest(request.ingest)
    placement = request.placement
    if (placement.procs or 1) > 1 or (placement.gpus or 1) > 1 or placement.nnodes > 1:
        raise UsageError("chat runs in one process; use `starcli ask -q ... -q ...` on several ranks")
    document = read_input(request.sources, request.ingest, emit, stdin)
    spec, tokenizer = model_and_tokenizer(settings, emit)
    settings = decide_sampling(settings, spec.path)
    doc_ids = build_prompt(tokenizer, document.render(), "?").document_ids
    limit = model_window(model_config(spec.path, settings.trust_remote_code), settings, None).limit
    if limit and len(doc_ids) + settings.max_new_tokens + _QUESTION_ROOM > limit:
        raise InputError(
            f"the input is too long for the model: {len(doc_ids)} document tokens + room for a question and "
            f"{settings.max_new_tokens} answer tokens > {limit} positions; use a smaller input or a lower --max-new-tokens"
        )
    session = executor_for(settings, request.placement, 1, str(spec.path), tokenizer).local_session(emit)
    stage(emit, events.LOADING_MODEL, 1)
    partition = session.plan(len(doc_ids), settings.attention, settings.block_size, settings.anchor_size, settings.relay)
    encode, _ = session.encode(doc_ids, partition, lambda done, total: stage(emit, events.ENCODING_BLOCKS, done, total))
    note(emit, f"sampling: {describe_sampling(settings.sampling_report())}")
    note(emit, f"encoded {len(doc_ids)} document tokens in {encode.seconds:.2f} s with {partition.attention} attention "
               f"({reason_line(settings.attention, partition)}); ask away (/exit or Ctrl-D to leave)")
    turns = 0
    for line in questions(read_line):
        ids = followup_ids(tokenizer, line) if turns else tokenizer(question_text(tokenizer, line.strip()), add_special_tokens=False)["input_ids"]
        if limit and len(doc_ids) + session.engine.history + len(ids) + settings.max_new_tokens > limit:
            note(emit, "the conversation no longer fits the model's window; starting a fresh one")
            turns = 0
            ids = tokenizer(question_text(tokenizer, line.strip()), add_special_tokens=False)["input_ids"]
        tokens, stats, _ = session.stream(ids, settings, emit, keep_history=turns > 0)
        emit(events.AnswerEnd(turns))
        rate = stats.decode_tokens / stats.decode_seconds if stats.decode_seconds > 0 else 0.0
        note(emit, f"{len(tokens)} tokens, first after {stats.prefill_seconds:.2f} s, {rate:.1f} tokens/s, stopped: {stats.stop_reason}")
        turns += 1
