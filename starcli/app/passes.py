"""Run the passes of a long input (``app.longdoc``) through the same path as a one-pass ask.

Each pass becomes a ``Job`` built from ``build_prompt`` exactly like ``ask``'s; the passes of one
step (all sections, or one level of combines) go out together as a ``Batch``, which runs on one
loaded model, in this process or on torchrun ranks (``run.execute.Executor``). Events come back
per pass: section answers are collected, not printed; only the final pass streams to stdout;
progress is a line per finished pass on stderr. ``PassRunner.result`` then reads the run as one
result: the final answers to the user's questions, plus the facts of every pass (``long``).
"""

from __future__ import annotations

import time
from typing import Callable

from .. import events
from ..events import Emit
from ..ingest.prompt import ANSWER_INSTRUCTION, build_prompt
from ..run.settings import Batch, Job, RunSettings
from .longdoc import LongInputError, LongRun, Pass, answer_long, summarize_long

Execute = Callable[[Batch, Emit], list[dict]]


def token_starts(tokenizer, text: str) -> list[int]:
    """Character offset where each token of ``text`` starts (non-decreasing).

    Fast tokenizers report offsets; others are measured line by line, with a line's tokens spread
    evenly over its characters (exact at line starts, where sections prefer to start anyway)."""
    try:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        starts = [int(start) for start, _ in offsets]
    except (NotImplementedError, KeyError, TypeError, ValueError):
        starts, offset = [], 0
        for line in text.splitlines(keepends=True):
            count = len(tokenizer(line, add_special_tokens=False)["input_ids"])
            starts.extend(offset + k * len(line) // count for k in range(count))
            offset += len(line)
    for i in range(1, len(starts)):  # some tokenizers report a zero offset for byte-fallback pieces
        starts[i] = max(starts[i], starts[i - 1])
    return starts


class PassRunner:
    """``longdoc.Passes`` over a tokenizer, a window and an ``execute`` for batches of jobs."""

    def __init__(self, settings: RunSettings, model_path: str, tokenizer, window: int, execute: Execute, emit: Emit,
                 system: str | None = ANSWER_INSTRUCTION):
        self.settings = settings
        self.system = system  # the prompts' system message: none for a summary (it asks for a length)
        self.model_path = model_path
        self.tokenizer = tokenizer
        self.window = window
        self.answer_tokens = settings.max_new_tokens
        self.execute = execute
        self.emit = emit
        self.records: list[dict] = []  # one per pass run: kind, label, token counts, its result
        self.first_token_at: dict[int, float] = {}  # final answer index -> perf_counter of its first token

    def token_starts(self, text: str) -> list[int]:
        return token_starts(self.tokenizer, text)

    def prompt_tokens(self, document: str, question: str) -> int:
        prompt = build_prompt(self.tokenizer, document, question, self.system)
        return len(prompt.document_ids) + len(prompt.question_ids)

    def job(self, one: Pass) -> Job:
        prompts = [build_prompt(self.tokenizer, one.document, q, self.system) for q in one.questions]
        needed = len(prompts[0].document_ids) + max(len(p.question_ids) for p in prompts) + self.answer_tokens
        if needed > self.window:  # longdoc plans every pass to fit; this is the guarantee
            raise LongInputError(f"{one.label}: {needed} tokens do not fit the window of {self.window}")
        return Job(self.settings, self.model_path, prompts[0].document_ids, [p.question_ids for p in prompts], list(one.questions))

    def run(self, passes: list[Pass]) -> list[list[str]]:
        jobs = [self.job(p) for p in passes]
        # several questions (ask -q ... -q ... --long map) each end in a final pass of their own
        finals_so_far = sum(r["kind"] == "final" for r in self.records)
        sink = _BatchSink(self.emit, passes, self.first_token_at, finals_so_far)
        results = self.execute(Batch(jobs), sink)
        if len(results) != len(passes):
            raise LongInputError(f"{len(results)} of {len(passes)} passes returned a result")
        for one, job, result in zip(passes, jobs, results):
            self.records.append({
                "kind": one.kind, "label": one.label, "document_tokens": len(job.document_ids),
                "question_tokens": max(len(q) for q in job.questions), "result": result,
            })
        return [[a["answer"] for a in result["answers"]] for result in results]

    def result(self, run: LongRun, questions: list[str], started: float) -> dict:
        """The final pass's result, reading as the answer to the user's questions over the whole
        input, plus ``long``: sections, passes, and every section's summary or partial answers."""
        records = self.records
        finals = [r["result"] for r in records if r["kind"] == "final"]
        answers = []
        for question, final in zip(questions, finals):
            answer = dict(final["answers"][0], question=question)
            if self.first_token_at.get(len(answers)) is not None:
                # from the start of the run: every section pass comes before the answer's first token
                answer["time_to_first_token_s"] = self.first_token_at[len(answers)] - started
            answers.append(answer)
        phase1 = sum(r["result"]["phase1_s"] for r in records)
        encoded = sum(r["document_tokens"] for r in records)
        long_facts = {
            "strategy": run.strategy,
            "input_tokens": run.input_tokens,
            "window": run.window,
            "section_budget": run.section_budget,
            "sections": len(run.sections),
            "passes": len(records),
            "pass_counts": dict(run.passes),
            "combine_levels": run.combine_levels,
            "section_tokens": [list(s.tokens) for s in run.sections],
            "pass_log": [
                {"kind": r["kind"], "label": r["label"], "document_tokens": r["document_tokens"],
                 "question_tokens": r["question_tokens"],
                 "answer_tokens": max(a["answer_tokens"] for a in r["result"]["answers"]),
                 "phase1_s": r["result"]["phase1_s"]}
                for r in records
            ],
        }
        if run.strategy == "summary":
            long_facts["section_summaries"] = run.partials[0]
        else:
            long_facts["partial_answers"] = [{"question": q, "answers": p} for q, p in zip(questions, run.partials)]
        return {
            **finals[-1],
            "answers": answers,
            "document_tokens": run.input_tokens,
            "model_load_s": records[0]["result"]["model_load_s"],
            "phase1_s": phase1,
            "phase1_tokens_per_s": encoded / phase1 if phase1 > 0 else None,
            "long": long_facts,
        }


def read_long(request, text: str, needed: int, tokenizer, window: int, execute: Execute, emit: Emit,
              started: float) -> dict:
    """Read an input over the window in passes (``app.longdoc``): the result of the final pass,
    with the whole run's facts under ``long``."""
    how = ("summarizing it section by section, then combining the section summaries in order"
           if request.long == "summary" else
           "--long map: asking each section, then combining the partial answers in order")
    emit(events.Note(f"the prompt needs {needed} tokens, more than the window of {window}: {how}"))
    runner = PassRunner(request.settings, execute.model_path, tokenizer, window, execute, emit,
                        system=None if request.long == "summary" else ANSWER_INSTRUCTION)
    if request.long == "summary":
        run = summarize_long(text, request.words, runner)
    else:
        run = answer_long(text, request.questions, runner)
    return runner.result(run, request.questions, started)


class _BatchSink:
    """Takes one batch's events: shows progress, and lets only the final pass's answer through."""

    def __init__(self, emit: Emit, passes: list[Pass], first_token_at: dict[int, float], final_index: int):
        self.emit = emit
        self.passes = passes
        self.first_token_at = first_token_at  # the runner's, filled across batches
        self.final_index = final_index  # which answer a final pass in this batch gives (one per batch)
        self.current: Pass | None = None

    def note(self, text: str) -> None:
        self.emit(events.Note(text))

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.PassStart):
            self.current = self.passes[event.index]
            if self.current.kind == "final":
                self.note(f"{self.current.label} into the answer")
                if self.current.heading:
                    self.emit(events.Question(self.final_index, self.current.heading))
        elif isinstance(event, events.Result):
            if self.current is not None and self.current.kind != "final":
                self.note(f"{self.current.label} done: {_pass_summary(event.result)}")
        elif isinstance(event, (events.Token, events.AnswerEnd)):
            if self.current is not None and self.current.kind == "final":
                if isinstance(event, events.Token):
                    self.first_token_at.setdefault(self.final_index, time.perf_counter())
                self.emit(event)
        elif isinstance(event, events.Note) or (isinstance(event, events.Stage) and event.stage == events.LOADING_MODEL):
            self.emit(event)


def _pass_summary(result: dict) -> str:
    answers = result.get("answers", [])
    seconds = result.get("phase1_s", 0.0) + sum(a.get("prefill_s", 0.0) + a.get("decode_s", 0.0) for a in answers)
    written = sum(a.get("answer_tokens", 0) for a in answers)
    return f"read {result.get('document_tokens', 0)} tokens, wrote {written}, {seconds:.1f} s"
