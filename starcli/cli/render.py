"""Render run events: the answer to stdout as it streams, progress and the timing report to stderr,
or one JSON object on stdout with ``--json``.

Events are ``starcli.events`` (they may have crossed a socket from a rank, as JSON).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import events


def _fancy(stream: IO) -> bool:
    """Animated progress only on a terminal, and never when NO_COLOR is set."""
    return hasattr(stream, "isatty") and stream.isatty() and "NO_COLOR" not in os.environ


def format_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _seconds(s: float | None) -> str:
    return "-" if s is None else (f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s")


class Renderer:
    """Callable event sink used by the CLI in one process and for events relayed from ranks."""

    def __init__(self, *, json_output: bool = False, quiet: bool = False, stdout: IO | None = None, stderr: IO | None = None):
        self.json_output = json_output
        self.quiet = quiet
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.fancy = _fancy(self.stderr) and not quiet
        self.console = Console(file=self.stderr, no_color="NO_COLOR" in os.environ, highlight=False)
        self.progress: Progress | None = None
        self.tasks: dict[str, int] = {}
        self.stage_started: dict[str, float] = {}
        self.answer_started = False

    # --- stderr ---------------------------------------------------------------------------------
    def note(self, text: str, warning: bool = False) -> None:
        if not self.quiet or warning:
            self.stop_progress()
            print(f"starcli: {text}", file=self.stderr, flush=True)

    def stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            self.tasks.clear()

    def _stage(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if not self.fancy:
            # plain lines: one when a stage finishes; long counted stages also announce their start
            if stage not in self.stage_started:
                self.stage_started[stage] = time.perf_counter()
                if total > 1 and done < total:
                    print(f"starcli: {stage}...", file=self.stderr, flush=True)
            if total and done >= total and self.stage_started.get(stage) is not None:
                took = time.perf_counter() - self.stage_started[stage]
                self.stage_started[stage] = None  # finished; never printed twice
                if took >= 0.5 or total > 1:  # quick steps would only be noise in a log
                    print(f"starcli: {stage}: done ({total}/{total}, {_seconds(took)})", file=self.stderr, flush=True)
            return
        if self.progress is None:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=self.console, transient=True,
            )
            self.progress.start()
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total or None)
        self.progress.update(self.tasks[stage], completed=done, total=total or None)
        if total and done >= total:
            self.progress.remove_task(self.tasks.pop(stage))
            if not self.tasks:
                self.stop_progress()

    # --- stdout ---------------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.Stage):
            self._stage(event.stage, event.done, event.total)
        elif isinstance(event, events.Note):
            self.note(event.text, event.warning)
        elif isinstance(event, events.Question):
            if not self.json_output:
                self.stop_progress()
                self._write(("\n" if event.index else "") + f"## {event.text}\n")
        elif isinstance(event, events.Token):
            if not self.json_output:
                self.stop_progress()
                self.answer_started = True
                self._write(event.text)
        elif isinstance(event, events.AnswerEnd):
            if not self.json_output and self.answer_started:
                self._write("\n")
        # Result events are the caller's (run.execute returns them); nothing to show yet

    def finish(self, result: dict) -> None:
        """After the run: the report on stderr, or the JSON object on stdout."""
        self.stop_progress()
        if self.json_output:
            self._write(json.dumps(result, indent=2, default=str) + "\n")
        elif not self.quiet:
            for line in report_lines(result):
                print(line, file=self.stderr)
            self.stderr.flush()


def report_lines(r: dict) -> list[str]:
    """The timing report, like the summaries local LLM runners print after an answer."""
    lines = ["", "--- starcli report ---"]
    answers = r.get("answers", [])
    if "model" in r:
        name = r.get("model_name") or r["model"]
        lines.append(f"model          {name} ({r.get('dtype', '?')}, {r.get('device', '?')}, kernel {r.get('kernel', '?')})")
    if r.get("dtype_choice"):
        lines.append(f"dtype          {r.get('dtype', '?')} ({r['dtype_choice']})")
    if r.get("rope_scaling"):
        lines.append(f"rope scaling   {r['rope_scaling']}: window {r.get('window')} (accuracy degrades past the trained length)")
    if r.get("resident"):
        lines.append("model load     none: the server keeps it loaded")
    elif "model_load_s" in r:
        warmup = f" + GPU warm-up {_seconds(r['warmup_s'])}" if r.get("warmup_s") else ""
        lines.append(f"model load     {_seconds(r['model_load_s'])}{warmup}")
    if "ingest_s" in r:
        lines.append(f"ingest         {_seconds(r['ingest_s'])} ({r.get('files', 0)} parts, {r.get('skipped', 0)} skipped)")
    if "document_tokens" in r:
        q = sum(a.get("question_tokens", 0) for a in answers)
        a = sum(a.get("answer_tokens", 0) for a in answers)
        lines.append(f"tokens         document {r['document_tokens']} / question {q} / answer {a}")
    lines.extend(_long_lines(r.get("long")))
    if "attention" in r:
        lines.append(
            f"attention      {r['attention']}: {r.get('blocks')} blocks of {r.get('block_size')}, "
            f"anchor {r.get('anchor_size')}, relay {r.get('relay', 0)}, {r.get('ranks')} rank(s)"
        )
        if str(r.get("attention_reason", "")).startswith("auto"):
            lines.append(f"               {r['attention_reason']}")
    if r.get("sampling"):
        from ..app.decoding import describe_sampling

        lines.append(f"sampling       {describe_sampling(r['sampling'])}")
    if "phase1_s" in r:
        rate = r.get("phase1_tokens_per_s")
        lines.append(f"phase 1        {_seconds(r['phase1_s'])} ({rate:,.0f} tokens/s)" if rate else f"phase 1        {_seconds(r['phase1_s'])}")
    cache = r.get("cache")
    if cache:
        where = "kept encoded by the server" if cache.get("memory") else "document KV loaded"
        lines.append(
            f"cache          hit: {where} in {_seconds(cache['load_s'])}, phase 1 saved {_seconds(cache['saved_s'])}"
            if cache.get("hit") else "cache          miss: phase 1 ran and its KV was stored"
        )
    for i, a in enumerate(answers):
        label = f"answer {i + 1}" if len(answers) > 1 else "answer"
        parts = [f"first token {_seconds(a.get('time_to_first_token_s'))}"]
        if a.get("decode_tokens_per_s"):
            mode = ", ".join(x for x in (a.get("decode_mode"), "int8 weights" if r.get("decode_weights") == "int8" else None) if x)
            mode = f" ({mode})" if mode else ""
            parts.append(f"decode {a['decode_tokens_per_s']:.1f} tokens/s{mode}")
        if a.get("capture_s"):
            parts.append(f"graph capture {_seconds(a['capture_s'])}")
        if a.get("stop_reason"):
            parts.append(f"stopped: {a['stop_reason']}")
        lines.append(f"{label:<15}" + ", ".join(parts))
    for rank in r.get("per_rank", []) if r.get("ranks", 1) > 1 else []:
        lines.append(
            f"rank {rank['rank']:<10}phase 1 {_seconds(rank['phase1_s'])}, KV tokens {rank['kv_tokens']}, "
            f"anchor received {rank['anchor_tokens']}, peak memory {format_bytes(rank['peak_memory_bytes'])}"
        )
    if r.get("ranks", 1) == 1 and r.get("per_rank"):
        lines.append(f"peak memory    {format_bytes(r['per_rank'][0]['peak_memory_bytes'])} ({r['per_rank'][0]['device']})")
    if "total_s" in r:
        lines.append(f"total          {_seconds(r['total_s'])}")
    return lines


def _long_lines(long: dict | None) -> list[str]:
    """How an input over the window was read: the strategy, its sections and its passes. The
    attention, phase 1 and answer lines that follow then describe the final pass (phase 1: all)."""
    if not long:
        return []
    strategy = "hierarchical summary" if long["strategy"] == "summary" else "--long map"
    counts = long.get("pass_counts", {})
    names = {"section": "section", "combine": "combine", "final": "final"}
    kinds = ", ".join(f"{counts[k]} {names[k]}{'s' if counts[k] > 1 else ''}" for k in names if counts.get(k))
    levels = long.get("combine_levels", 0)
    combined = "section summaries" if long["strategy"] == "summary" else "partial answers"
    return [
        f"long input     {long['input_tokens']} tokens > window {long['window']}: {strategy}",
        f"sections       {long['sections']} of up to {long['section_budget']} tokens, at natural boundaries",
        f"passes         {long['passes']} ({kinds}); {combined} combined in order"
        + (f" over {levels + 1} levels" if levels else ""),
    ]
